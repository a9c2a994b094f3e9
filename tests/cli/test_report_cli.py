import json

import pytest

from cnnlab.cli import report as report_cli
from cnnlab.cli.main import HelpFormatter, Parser
from cnnlab.config import resolve_config
from cnnlab.errors import CheckpointError, ConfigError
from cnnlab.training.loop import fit
from synth import prepared_data, write_image_folder

MISSING = (r"missing' does not exist; pass a \.pt file written by `cnnlab train`, a run "
           r"directory that contains model\.pt, or `default`")


def _parser():
    parser = Parser(prog="cnnlab")
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true")
    common.add_argument("-q", "--quiet", action="store_true")
    sub = parser.add_subparsers(dest="verb", parser_class=Parser)
    report_cli.add_parser(sub, common, HelpFormatter)
    return parser


def _run(*argv):
    args = _parser().parse_args(["report", *argv])
    return args.run(args)


@pytest.fixture(autouse=True)
def _quick_timing(monkeypatch):
    # the timing itself is tested in tests/evaluate; here only its place in the output matters
    import cnnlab.evaluate

    real = cnnlab.evaluate.measure_inference
    monkeypatch.setattr(cnnlab.evaluate, "measure_inference",
                        lambda model, shape, **kw: real(model, shape, device=kw["device"],
                                                        latency_runs=5, batch_size=8,
                                                        throughput_runs=1, warmup=1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    cfg = resolve_config({"model": {"name": "paper-cnn-tiny"},
                          "train": {"epochs": 1, "batch_size": 16, "seed": 0, "device": "cpu"}})
    fit(cfg, out_dir=root / "run", progress=False, data=prepared_data())
    folder = write_image_folder(root / "digits", n_per_class=3, classes=["0", "1", "2", "3"])
    return root / "run", folder


def test_help_states_the_defaults(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["report", "--help"])
    out = capsys.readouterr().out
    for text in ("RUN_DIR_OR_CHECKPOINT", "(default: test)", "(default: 1000)",
                 "default: the run directory", "report.html"):
        assert text in out, text


def test_report_prints_where_the_files_are(trained, tmp_path, capsys):
    run_dir, folder = trained
    out = tmp_path / "rep"
    assert _run(str(run_dir), "--dataset", str(folder), "--out", str(out), "--bootstrap", "100",
                "-q") == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "95 % CI" in text
    assert str(out / "report.html") in text and str(out / "metrics.json") in text
    assert (out / "report.html").is_file() and (out / "report.md").is_file()


def test_report_json(trained, tmp_path, capsys):
    run_dir, folder = trained
    assert _run(str(run_dir), "--dataset", str(folder), "--out", str(tmp_path), "--json",
                "--bootstrap", "100", "-q") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 12 and 0 <= result["accuracy"] <= 1
    assert set(result["efficiency"]) >= {"latency_ms_p50", "latency_ms_p95", "latency_ms_p99",
                                         "throughput_images_per_s", "parameters", "macs",
                                         "checkpoint_mb", "train_time_s"}
    assert result["files"]["html"] == str(tmp_path / "report.html")


def test_missing_run_directory_is_a_user_error(tmp_path):
    with pytest.raises(CheckpointError, match=MISSING):
        _run(str(tmp_path / "missing"))


@pytest.mark.parametrize(("flag", "message"), [("--batch-size", "--batch-size must be at least 1"),
                                               ("--bootstrap", "--bootstrap must be at least 1")])
def test_bad_numbers(tmp_path, flag, message):
    with pytest.raises(ConfigError, match=message):
        _run(str(tmp_path), flag, "0")
