"""``cnnlab tune`` in-process: help, a tiny study with --json, resume, and user errors."""

import json

import pytest

from cli_helpers import error_line as _error_line
from cnnlab.cli.main import main
from synth import write_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    write_image_folder(root / "train", n_per_class=12, num_classes=3, size=12)
    write_image_folder(root / "test", n_per_class=3, num_classes=3, size=12, seed=1)
    return root


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text("[base]\ntrain.epochs = 2\ndata.image_size = 12\ndata.val_fraction = 0.25\n"
                    "[params]\noptim.lr = [0.003, 0.01]\nmodel.depth = [4, 5]\n")
    return path




def test_help_lists_spaces_and_format(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["tune", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for text in ("table3", "nas", "--sampler", "--pruner", "--workers", "--budget-minutes",
                 "best.toml", "[params]"):
        assert text in out


def test_tiny_study_json_and_rerun(folder, space, tmp_path, capsys) -> None:
    out = tmp_path / "study"
    args = ["tune", "--space", str(space), "--dataset", str(folder), "--set", "model.width=4",
            "--pruner", "none", "--threads", "1", "--out", str(out), "-q"]
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sampler"] == "grid" and summary["target_trials"] == 4
    assert summary["states"] == {"complete": 4} and summary["best"]["test_images"] == 9
    assert (out / "best.toml").is_file() and (out / "study.db").is_file()
    # a rerun of the finished study adds no trial and prints the same best
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "4 of 4 trials finished (4 complete)" in text
    assert f"Best: trial {summary['best']['trial']}" in text
    assert "Top 4 of 4 complete trials:" in text and "optim.lr" in text


@pytest.mark.parametrize(("extra", "message"), [
    (["--space", "nope"], "neither a built-in space"),
    (["--space", "table3", "--model", "resnet"],
     "model.depth = 5 is not a valid setting.*even"),
    (["--space", "nas", "--pruner", "sha"], "pruning compares one objective"),
    (["--space", "table3", "--objectives", "val_accuracy,speed"], "unknown objective 'speed'"),
    (["--space", "table3", "--set", "data.val_fraction=0"], "needs a validation split"),
])
def test_user_errors(extra, message, capsys, tmp_path) -> None:
    import re

    assert main(["tune", "--out", str(tmp_path / "x"), *extra]) == 2
    assert re.search(message, _error_line(capsys))


def test_bad_space_file(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[params]\noptim.lr = []\n")
    assert main(["tune", "--space", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "'values' must be a non-empty list" in _error_line(capsys)
    bad.write_text("[params\n")
    assert main(["tune", "--space", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "cannot read search space" in _error_line(capsys)
