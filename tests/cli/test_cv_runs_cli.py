"""``cnnlab cv`` and ``cnnlab runs`` in-process: outputs, --json, resume and error messages."""

import json

import pytest

import cnnlab.cli.main as cli_main
from cli_helpers import error_line as _error_line
from cnnlab.cli.main import main
from synth import write_image_folder


@pytest.fixture(autouse=True)
def _verbs(monkeypatch, tmp_path):
    # no download; and the verbs registered even before main.VERBS lists them
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")
    monkeypatch.setattr(cli_main, "VERBS", tuple(dict.fromkeys((*cli_main.VERBS, "cv", "runs"))))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    write_image_folder(root / "train", n_per_class=8, num_classes=2, classes=["a", "b"])
    write_image_folder(root / "test", n_per_class=3, num_classes=2, seed=1, classes=["a", "b"])
    return root


def _cv_args(folder, out, *extra):
    return ["cv", "--dataset", str(folder), "--model", "paper-cnn-tiny", "--folds", "2",
            "--epochs", "3", "--batch-size", "4", "--lr", "0.003", "--device", "cpu",
            "--out", str(out), *extra]




def test_cv_then_runs(folder, tmp_path, capsys):
    out = tmp_path / "runs" / "cv"
    assert main([*_cv_args(folder, out), "-q", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["cv_dir"] == str(out) and result["folds"] == 2
    assert result["out_of_fold"]["images"] == 16
    assert set(result["metrics"]["val_accuracy"]) == {"mean", "std", "values"}
    assert (out / "learning_curves.png").is_file() and (out / "folds.json").is_file()

    assert main([*_cv_args(folder, out), "-q", "--resume"]) == 0  # nothing left to train
    text = capsys.readouterr().out
    assert "2-fold cross-validation of paper-cnn-tiny" in text
    assert "val_accuracy" in text and "out-of-fold accuracy" in text

    assert main(["runs", str(tmp_path / "runs"), "--json", "--sort", "name"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["status"]) for r in rows] == [
        ("cv", "cv"), ("cv/fold-1", "done"), ("cv/fold-2", "done")]
    assert rows[0]["val_accuracy"] == pytest.approx(result["metrics"]["val_accuracy"]["mean"])

    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "metrics.json").write_text("[1, 2")
    assert main(["runs", str(tmp_path / "runs"), "--sort", "test_accuracy", "--reverse"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["name", "status", "model"]
    assert lines[-2].startswith("broken") and "broken:" in lines[-1]
    assert "paper-cnn-tiny" in text and f" {folder.name} " in text  # a folder by its name


def test_cv_errors(folder, tmp_path, capsys):
    assert main([*_cv_args(folder, tmp_path / "x"), "--folds", "1", "-q"]) == 2
    assert _error_line(capsys) == ("error: The 'folds' parameter of cross_validate must be an "
                                   "int >= 2. Got 1 instead.")
    assert main([*_cv_args(folder, tmp_path / "x"), "--folds", "9", "-q"]) == 2
    assert "too few in class 'a' (8), 'b' (8)" in _error_line(capsys)
    assert main([*_cv_args(folder, tmp_path / "none"), "--resume", "-q"]) == 2
    assert _error_line(capsys).endswith("config.toml does not exist; is "
                                        f"'{tmp_path / 'none'}' a cross-validation directory?")
    assert main(["cv", "--resume", "-q"]) == 2
    assert _error_line(capsys) == ("error: --resume needs --out, the cross-validation "
                                   "directory to continue")


def test_cv_refuses_bad_settings_before_loading_data(tmp_path, capsys):
    # no dataset given: the default mnist is not in the empty data dir, so the settings must
    # fail first
    assert main(["cv", "--model", "resnet", "--set", "model.nope=1", "--out",
                 str(tmp_path / "cv"), "-q"]) == 2
    assert "model 'resnet' got an unknown keyword argument 'nope'" in _error_line(capsys)
    assert main(["cv", "--weight-decay", "inf", "--out", str(tmp_path / "cv"), "-q"]) == 2
    assert _error_line(capsys) == ("error: argument --weight-decay: The 'optim.weight_decay' "
                                   "setting must be finite and >= 0. Got inf instead.")
    with pytest.raises(SystemExit):
        main(["cv", "--help"])
    text = capsys.readouterr().out
    assert "--epochs" in text and "(default: 20)" in text
    assert "--val-fraction" not in text and "--test-fraction" not in text


def test_runs_errors_and_help(tmp_path, capsys):
    assert main(["runs", str(tmp_path / "nowhere")]) == 2
    assert "does not exist; pass the directory that holds your run directories" in \
        _error_line(capsys)
    assert main(["runs", str(tmp_path), "--sort", "acc"]) == 2
    assert "cannot sort runs by 'acc'" in _error_line(capsys)
    assert main(["runs", str(tmp_path)]) == 0
    assert "no runs under" in capsys.readouterr().out
    for verb in ("cv", "runs"):
        with pytest.raises(SystemExit) as e:
            main([verb, "--help"])
        assert e.value.code == 0
        assert "default" in capsys.readouterr().out
