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
                 "best.toml", "[params]", "--model paper-cnn", "[models.paper-cnn]"):
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


def test_table3_on_the_papers_own_network(folder, tmp_path, capsys) -> None:
    """`cnnlab tune --space table3 --model paper-cnn`: two grid points of Table III trained
    on paper-cnn's blocks and kernel size."""
    out = tmp_path / "paper"
    assert main(["tune", "--space", "table3", "--model", "paper-cnn", "--dataset", str(folder),
                 "--set", "data.image_size=12", "--set", "data.val_fraction=0.25",
                 "--limit", "0", "--trials", "2", "--pruner", "none", "--threads", "1",
                 "--out", str(out), "-q", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sampler"] == "grid" and summary["states"] == {"complete": 2}
    params = summary["best"]["params"]
    assert set(params) == {"optim.lr", "train.batch_size", "train.epochs", "model.blocks",
                           "model.kernel_size"}
    assert params["model.blocks"] in (1, 2, 3) and params["model.kernel_size"] in (3, 5, 7)
    best = (out / "best.toml").read_text()
    assert 'name = "paper-cnn"' in best and f"blocks = {params['model.blocks']}" in best


@pytest.mark.parametrize(("extra", "message"), [
    (["--space", "nope"], "neither a built-in space"),
    (["--space", "table3", "--model", "resnet"],
     "space 'table3' has model knobs for the families convnet, paper-cnn, not for model "
     "'resnet'"),
    (["--space", "table3", "--model", "paper-cnn", "--set", "data.image_size=4"],
     r"model.blocks = 3 is not a valid setting.*got 4x4, where at most 2 block\(s\) fit"),
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


def test_tune_without_data_is_one_error_before_any_trial(folder, space, tmp_path, monkeypatch,
                                                         capsys) -> None:
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")
    monkeypatch.delenv("CNNLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # no data/mnist here
    out = tmp_path / "nodata"
    args = ["tune", "--space", str(space), "--set", "model.width=4", "--pruner", "none",
            "--threads", "1", "--out", str(out), "-q"]
    assert main(args) == 2
    line = _error_line(capsys)
    assert "mnist train split not found" in line and "--data-dir" in line
    assert not (out / "study.db").exists()
    # the same command with data runs: there is no study of other settings to refuse
    assert main([*args, "--dataset", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["states"] == {"complete": 4}


def test_a_study_whose_every_trial_failed_exits_1_and_can_start_again(
        folder, space, tmp_path, monkeypatch, capsys) -> None:
    import cnnlab.training.loop as loop
    from cnnlab.errors import DataError

    real_fit = loop.fit

    def broken(*args, **kwargs):
        raise DataError("image class_1/0003.png cannot be read")

    out = tmp_path / "failing"
    args = ["tune", "--space", str(space), "--dataset", str(folder), "--set", "model.width=4",
            "--pruner", "none", "--threads", "1", "--out", str(out), "-q"]
    monkeypatch.setattr(loop, "fit", broken)
    assert main([*args, "--json"]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["states"] == {"fail": 4} and summary["finished"] == 0
    assert (out / "trials.csv").is_file() and (out / "report.html").is_file()
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("error: ")]
    assert errors == [captured.err.rstrip().splitlines()[-1]] and "Traceback" not in captured.err
    assert errors[0].startswith("error: every trial of study 'failing' failed (4 trial(s); the "
                                "first with: image class_1/0003.png cannot be read)")
    # fixed, and with other settings: the study had no finished trial, so it starts again
    monkeypatch.setattr(loop, "fit", real_fit)
    assert main([*args, "--set", "train.epochs=1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["states"] == {"complete": 4} and summary["trials"] == 4
