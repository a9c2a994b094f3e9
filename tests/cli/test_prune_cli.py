"""``cnnlab prune`` in-process: --json, the text report, --help and error lines."""

import json

import pytest

import cnnlab
import cnnlab.cli.main as cli_main
from cli_helpers import error_line as _error_line
from cnnlab.cli.main import main
from synth import write_image_folder

CLASSES = ["a", "b", "c"]


@pytest.fixture(autouse=True)
def _verbs(monkeypatch):
    # the verb registered even before main.VERBS lists it
    monkeypatch.setattr(cli_main, "VERBS", tuple(dict.fromkeys((*cli_main.VERBS, "prune"))))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_image_folder(root / "train", n_per_class=16, num_classes=3, size=16, classes=CLASSES)
    write_image_folder(root / "test", n_per_class=4, num_classes=3, size=16, seed=1,
                       classes=CLASSES)
    return root


@pytest.fixture(scope="module")
def source(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("src") / "run"
    assert main(["train", "--dataset", str(folder), "--model", "convnet", "--set",
                 "data.image_size=16", "--epochs", "2",
                 "--batch-size", "16", "--device", "cpu", "--out", str(out), "-q"]) == 0
    return out


def test_help_explains_the_methods(capsys):
    with pytest.raises(SystemExit) as e:
        main(["prune", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for text in ("--method", "--amount", "--finetune-epochs", "--data-dir", "magnitude",
                 "channel", "same size", "shape", "latency", "prune.json"):
        assert text in out, text


def test_channel_json_and_magnitude_text(source, folder, tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["prune", str(source), "--method", "channel", "--amount", "0.5",
                 "--finetune-epochs", "1", "--out", str(out), "--json", "-q"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["method"] == "channel" and r["amount"] == 0.5
    widths = [w // 2 for w in cnnlab.load(source).classifier.config.widths]
    assert r["model"]["kwargs"]["widths"] == widths
    assert r["macs"]["after"] < r["macs"]["before"]
    assert r["checkpoint"] == str(out / "model.pt") and (out / "prune.json").is_file()
    assert set(r["accuracy"]) == {"source", "pruned", "finetuned"}
    assert cnnlab.load(out).classifier.fc.in_features == widths[-1] * 4 * 4

    assert main(["prune", str(source), "--amount", "0.5", "--finetune-epochs", "1",
                 "--data-dir", str(folder), "--out", str(tmp_path / "m"), "-q"]) == 0
    text = capsys.readouterr().out
    assert "magnitude pruning of" in text and "zero weights" in text
    assert "test accuracy (12 images): source" in text and "fine-tuned 1 epoch(s)" in text
    assert f"wrote {tmp_path / 'm'}/" in text


@pytest.mark.parametrize(("extra", "message"), [
    (["--amount", "1.5"], "error: the pruning amount must be a fraction in [0, 1)"),
    (["--amount", "0.5", "--finetune-epochs", "-1"], "finetune_epochs must be an int >= 0"),
    (["--amount", "0.5", "--method", "channel", "--scope", "layer"],
     "--scope and --keep-head (scope, include_head) are options of magnitude pruning"),
    (["--amount", "0.5", "--method", "channel", "--keep-head"], "options of magnitude pruning"),
])
def test_user_errors(source, tmp_path, capsys, extra, message):
    assert main(["prune", str(source), "--out", str(tmp_path / "o"), "-q", *extra]) == 2
    assert message in _error_line(capsys)


def test_missing_source_and_existing_out(source, tmp_path, capsys):
    assert main(["prune", str(tmp_path / "missing-run"), "--amount", "0.5", "--out",
                 str(tmp_path / "o"), "-q"]) == 2
    assert "missing-run" in _error_line(capsys)
    assert main(["prune", str(source), "--amount", "0.5", "--out", str(source), "-q"]) == 2
    assert "already holds a run; pass --overwrite" in _error_line(capsys)
    assert main(["prune", str(source), "--amount", "0.5", "-q"]) == 2  # --out is required
    assert "--out" in _error_line(capsys)
