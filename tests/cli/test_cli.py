"""The CLI in-process: exit codes, one-line errors, --json outputs."""

import json

import pytest

from cli_helpers import error_line as _error_line
from cnnlab.cli.main import main
from synth import write_image_folder

REPO_DATA = __import__("pathlib").Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    # no test may download: an empty data dir, no network fallback
    monkeypatch.setenv("CNNLAB_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    write_image_folder(root / "train", n_per_class=24, num_classes=3, classes=["a", "b", "c"])
    write_image_folder(root / "test", n_per_class=6, num_classes=3, seed=1,
                       classes=["a", "b", "c"])
    return root


@pytest.fixture(scope="module")
def run_dir(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    code = main(["train", "--dataset", str(folder), "--model", "paper-cnn-tiny", "--epochs", "3",
                 "--batch-size", "16", "--lr", "0.003", "--device", "cpu", "--out", str(out),
                 "-q"])
    assert code == 0
    return out




def test_train_json_and_run_directory(folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--dataset", str(folder), "--model", "lenet5", "--epochs", "2",
                 "--device", "cpu", "--out", str(out), "--json", "-q"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["run_dir"] == str(out)
    assert 0 <= result["test_accuracy"] <= 1 and result["epochs_run"] == 2
    assert (out / "model.pt").is_file() and (out / "config.toml").is_file()


def test_evaluate_json(run_dir, folder, capsys):
    assert main(["evaluate", str(run_dir), "--json", "-q"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] >= 0.8
    assert set(result["per_class"]) == {"a", "b", "c"}
    assert sum(map(sum, result["confusion_matrix"])) == 18
    assert result["timing"]["latency_ms_p50"] > 0


def test_evaluate_table(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "-q"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "confusion matrix" in out and "precision" in out


def test_predict_reports_bad_files_and_predicts_the_rest(run_dir, folder, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    good = sorted((folder / "test" / "b").glob("*.png"))[:2]
    code = main(["predict", str(run_dir), *map(str, good), str(bad), "--json", "-q"])
    captured = capsys.readouterr()
    assert code == 2
    every = [json.loads(ln) for ln in captured.out.splitlines()]
    # the bad file gets a line of its own with the error, so JSON consumers see every input
    errors = [ln for ln in every if "error" in ln]
    assert [ln["path"] for ln in errors] == [str(bad)] and "label" not in errors[0]
    assert "not a readable image" in errors[0]["error"]
    lines = [ln for ln in every if "error" not in ln]
    assert [ln["path"] for ln in lines] == [str(p) for p in good]
    assert all(set(ln["probabilities"]) == {"a", "b", "c"} for ln in lines)
    assert all(abs(sum(ln["probabilities"].values()) - 1) < 1e-5 for ln in lines)
    assert "broken.png" in captured.err and "Traceback" not in captured.err


def test_predict_directory_recursively(run_dir, folder, capsys):
    assert main(["predict", str(run_dir), str(folder / "test"), "-q"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 18 and "top 3" in out[0]


def test_models_and_summary(capsys):
    assert main(["models", "--json"]) == 0
    names = [m["name"] for m in json.loads(capsys.readouterr().out)["models"]]
    assert {"paper-cnn", "lenet5", "alexnet", "resnet"} <= set(names)
    assert main(["summary", "paper-cnn", "--input", "3x224x224"]) == 0
    out = capsys.readouterr().out
    for figure in ("896", "18,496", "25,690,240", "1,290"):
        assert figure in out
    assert main(["summary", "default", "--json"]) == 0  # the packaged model, by its name
    packaged = json.loads(capsys.readouterr().out)
    assert packaged["total_params"] == 289_514


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "--model", "lenet"], "unknown model 'lenet'; did you mean 'lenet5'"),
    (["train", "--lr", "-1"], "The 'optim.lr' setting must be a positive number. Got -1.0"),
    (["train", "--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
    (["train", "--set", "optim.lrr=1"], "unknown config key 'optim.lrr'; did you mean 'optim.lr'"),
    (["train", "--dataset", "mnist", "--epochs", "1"], "mnist train split not found"),
    (["train", "--dataset", "no/such/dir"], "neither a registered dataset"),
    (["train", "--device", "cuda:7"], "CUDA is not available"),
    (["evaluate", "missing/run"], "does not exist; pass a .pt file"),
    (["predict", "missing.pt", "x.png"], "does not exist"),
    (["summary", "paper-cnn", "--input", "28x28"], "--input must look like CxHxW"),
    (["data", "info", "mnistt"], "neither a registered dataset"),
    (["nosuchverb"], "invalid choice: 'nosuchverb'"),
    # a setting given as a flag is named as that flag; given with --set, as the setting
    (["train", "--weight-decay", "inf"], "error: argument --weight-decay: The "
     "'optim.weight_decay' setting must be finite and >= 0. Got inf instead."),
    (["train", "--set", "optim.weight_decay=inf"],
     "error: The 'optim.weight_decay' setting must be finite and >= 0. Got inf instead."),
    (["train", "--set", "train.min_delta=nan"],
     "error: The 'train.min_delta' setting must be finite and in [0, 1). Got nan instead."),
    (["train", "--set", "optim.warmup_epochs=inf"],
     "error: The 'optim.warmup_epochs' setting must be finite and >= 0. Got inf instead."),
    (["train", "--epochs", "0", "--set", "optim.lr=0"],
     "error: The 'optim.lr' setting must be a positive number. Got 0.0 instead."),
    (["train", "--epochs", "0"],
     "error: argument --epochs: The 'train.epochs' setting must be an integer >= 1. Got 0"),
    # --model with --set model.*: they combine, and the model's builder checks them before
    # any data is loaded (here there is none: mnist is not in the empty data dir)
    (["train", "--model", "resnet", "--set", "model.nope=1"],
     "model 'resnet' got an unknown keyword argument 'nope'"),
    (["train", "--set", "model.kernel_size=-3", "--model", "resnet"],
     "The 'kernel_size' parameter of model 'resnet' must be an odd int >= 1"),
    (["train", "--set", "model.depth=20", "--model", "lenet5"],
     "model 'lenet5' got an unknown keyword argument 'depth'"),
    (["train", "--recipe", "default", "--model", "lenet5", "--set", "model.depth=20"],
     "model 'lenet5' got an unknown keyword argument 'depth'"),
])
def test_user_errors_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    line = _error_line(capsys)
    assert message in line, line


def test_debug_shows_the_traceback():
    with pytest.raises(Exception, match="unknown model"):
        main(["train", "--model", "lenet", "--debug"])


@pytest.mark.skipif(not (REPO_DATA / "mnist").is_dir(), reason="data/mnist not in the repo")
def test_data_info_and_show_on_real_mnist(tmp_path, capsys):
    assert main(["data", "info", "mnist", "--data-dir", str(REPO_DATA), "--split", "test",
                 "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size"] == 10000 and info["shape"] == [1, 28, 28]
    assert sum(info["class_counts"].values()) == 10000
    assert info["class_counts"]["1"] == 1135
    out = tmp_path / "grid.png"
    assert main(["data", "show", "mnist", "--data-dir", str(REPO_DATA), "--split", "test",
                 "--out", str(out), "--per-class", "4"]) == 0
    assert out.stat().st_size > 1000


def test_help_states_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "default: 20" in out and "default: adam" in out and "Recipes:" in out


def test_help_states_every_settings_flag_with_its_default(capsys):
    from cnnlab.config import FLAGS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help lines
    for flag in FLAGS:
        assert flag.option in out, flag
        assert " ".join(flag.help_text().split()) in out, flag
    for group in ("model and data:", "optimisation:", "run:"):
        assert group in out
    assert "--augment [{affine,robust}]" in out and "{mnist-digits,resize}" in out
    assert "validation split (default: 0.0833, 5,000 of 60,000)" in out


def test_model_flag_and_set_model_options_combine(folder, tmp_path, capsys):
    # issue 14 §2: --model no longer drops the --set model.* options given with it
    out = tmp_path / "deep"
    assert main(["train", "--dataset", str(folder), "--set", "model.depth=8", "--model",
                 "resnet-tiny", "--epochs", "1", "--batch-size", "16", "--device", "cpu",
                 "--out", str(out), "--no-report", "--json", "-q"]) == 0
    capsys.readouterr()
    from cnnlab.config import load_config_file
    from cnnlab.training.checkpoint import load_checkpoint

    assert load_config_file(out / "config.toml")["model"] == {"name": "resnet-tiny", "depth": 8}
    ckpt = load_checkpoint(out / "model.pt")
    assert ckpt["model"]["kwargs"]["depth"] == 8
    # depth 8 over resnet-tiny's two stages: blocks (1, 2), so stage 2 has two blocks
    assert any(k.startswith("stages.1.1.") for k in ckpt["state_dict"])


def test_evaluate_with_and_without_the_report_agree(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--json", "-q", "--no-report"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(run_dir), "--json", "-q"]) == 0
    with_report = json.loads(capsys.readouterr().out)
    assert "report" not in plain and with_report["report"].endswith("report.html")
    assert plain["confusion_matrix"] == with_report["confusion_matrix"]
    assert plain["accuracy"] == pytest.approx(with_report["accuracy"])
    assert plain["loss"] == pytest.approx(with_report["loss"], abs=1e-5)


def test_library_messages_name_settings_and_the_cli_names_flags():
    from cnnlab.cli.main import build_parser, in_flag_terms

    verbs = build_parser().verbs
    message = ("The 'shots' setting of finetune must be >= 0 (0 = all images). Got -1 instead. "
               "Or set val_dir.")
    assert in_flag_terms(message, verbs["finetune"]) == (
        "--shots must be >= 0 (0 = all images). Got -1 instead. Or pass --val-dir.")
    # a setting the verb has no flag for, and config keys, keep their names
    assert in_flag_terms("set data_dir", verbs["finetune"]) == "set data_dir"
    assert in_flag_terms("The 'optim.lr' setting must be", verbs["train"]) == (
        "The 'optim.lr' setting must be")
    assert in_flag_terms(message, None) == message


def test_in_flag_terms_names_values_and_the_options_of_sub_verbs():
    from cnnlab.cli.main import build_parser, in_flag_terms

    verbs = build_parser().verbs
    # a setting's value in parentheses follows its flag
    assert in_flag_terms("The 'shots' setting of finetune (9) needs more than 9 images",
                         verbs["finetune"]) == "--shots 9 needs more than 9 images"
    # name=value: the flag with its value; a flag without one for booleans, --no-x for False
    assert in_flag_terms("scratch=True goes with strategy='finetune' only; set "
                         "feature_cache=False, or set overwrite=True", verbs["finetune"]) == (
        "--scratch goes with --strategy finetune only; pass --no-feature-cache, or pass "
        "--overwrite")
    # no flag gives it (store_true cannot be False), other settings, dotted keys: unchanged
    assert in_flag_terms("overwrite=False; set model.width=4; optim.lr=0.1; residual=False",
                         verbs["train"]) == (
        "overwrite=False; set model.width=4; optim.lr=0.1; residual=False")
    # a verb with sub-verbs lends their options
    assert in_flag_terms("The 'form' setting of export_dataset must be mnist or raw. Got 'x' "
                         "instead.", verbs["data"]) == (
        "--form must be mnist or raw. Got 'x' instead.")
