"""``cnnlab finetune``, ``cnnlab data export`` and ``cnnlab evaluate --data-dir FOLDER``
in-process."""

import json

import pytest

from cli_helpers import error_line as _error_line
from cnnlab.cli.main import main
from synth import write_image_folder

CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    write_image_folder(root / "train", n_per_class=16, num_classes=3, size=16, classes=CLASSES)
    out = root / "run"
    assert main(["train", "--dataset", str(root), "--model", "convnet", "--set",
                 "model.width=4", "--set", "data.image_size=16", "--epochs", "2",
                 "--batch-size", "16", "--device", "cpu", "--out", str(out), "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("target") / "t", n_per_class=8,
                              num_classes=3, size=20, seed=3, classes=CLASSES)


def test_help_explains_the_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        main(["finetune", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for text in ("--shots", "linear", "gradual", "discriminative", "Defaults for few images",
                 "early stopping", "augmentation", "$TORCH_HOME"):
        assert text in out, text


def test_finetune_json_report_and_evaluate_on_the_folder(source, target, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(["finetune", str(source), "--train-dir", str(target), "--shots", "3",
                 "--epochs", "3", "--device", "cpu", "--out", str(out), "--json", "-q"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["head"] == "kept" and result["train_images"] == 9
    assert result["test_images"] == 15 and result["metrics"]["test_images"] == 15
    assert result["report"].endswith("report.html") and (out / "report.html").is_file()
    # evaluate on the training folder given as --data-dir: its test split (splits.json), not
    # all 24 images, 9 of which it trained on
    assert main(["evaluate", str(out), "--data-dir", str(target), "--no-report", "--json",
                 "-q"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["samples"] == 15 and ev["dataset"] == str(target) and ev["origin"] == "own"
    manifest = json.loads((out / "splits.json").read_text())
    train = {f["path"] for f in manifest["splits"]["train"]["files"]}
    test = {f["path"] for f in manifest["splits"]["test"]["files"]}
    assert len(train) == 9 and len(test) == 15 and not train & test
    # plain text output
    assert main(["finetune", str(source), "--train-dir", str(target), "--strategy", "linear",
                 "--epochs", "2", "--device", "cpu", "--out", str(tmp_path / "lin"), "-q"]) == 0
    text = capsys.readouterr().out
    assert "linear, head kept" in text and "wrote" in text


@pytest.mark.parametrize(("extra", "message"), [
    (["--shots", "9"], "--shots 9 needs more than 9 images"),
    (["--strategy", "linear", "--augment"], "cannot augment"),
    (["--lr-decay", "2"], "--lr-decay must be in (0, 1]"),
])
def test_user_errors(source, target, tmp_path, capsys, extra, message):
    args = ["finetune", str(source), "--train-dir", str(target), "--out", str(tmp_path / "o"),
            "--device", "cpu", "-q", *extra]
    assert main(args) == 2
    assert message in _error_line(capsys)


def test_missing_folder_and_source(source, tmp_path, capsys):
    assert main(["finetune", str(source), "--train-dir", str(tmp_path / "nope"), "--out",
                 str(tmp_path / "o"), "-q"]) == 2
    assert "nope" in _error_line(capsys)
    folder = write_image_folder(tmp_path / "f", n_per_class=2, num_classes=2, size=16)
    assert main(["finetune", str(tmp_path / "missing-run"), "--train-dir", str(folder),
                 "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "missing-run" in _error_line(capsys)


def test_data_export(tmp_path, capsys):
    assert main(["data", "export", "sklearn-digits", "--limit", "30", "--out",
                 str(tmp_path / "d"), "-q"]) == 0
    assert "wrote 30 images in 10 classes" in capsys.readouterr().out
    assert main(["data", "export", "sklearn-digits", "--out", str(tmp_path / "d"), "-q"]) == 2
    assert "already exists" in _error_line(capsys)
