"""``cnnlab robustness``: its errors (one line, "did you mean", epsilon range) before any work,
and a small run that writes robustness.json, the plots, ood.json and the report section."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tests.cli_helpers import error_line

from cnnlab.cli.main import main
from cnnlab.inference.checkpoint import default_model_path


@pytest.mark.parametrize(("argv", "message"), [
    (["--suite", "corruptions,advesarial"],
     "unknown robustness suite 'advesarial'; did you mean 'adversarial'"),
    (["--corruptions", "fogg"], "unknown corruption 'fogg'; did you mean 'fog'"),
    (["--shifts", "jpg"], "unknown shift 'jpg'; did you mean 'jpeg'"),
    (["--attacks", "squre"], "unknown attack 'squre'; did you mean 'square'"),
    (["--eps", "0,0.1,1.5"], "L-inf epsilon must be a number in [0, 1]"),
    (["--eps", "0,-0.1"], "L-inf epsilon must be a number in [0, 1]"),
    (["--eps", "0,a"], "--eps takes comma-separated numbers"),
    (["--autoattack-eps", "2"], "L-inf epsilon must be a number in [0, 1]"),
    (["--autoattack-version", "standart"],
     "unknown AutoAttack version 'standart'; did you mean 'standard'"),
    (["--images", "0"], "--images must be an int >= 1"),
    (["--ood-rate", "0.9"], "--ood-rate must be in (0, 0.5]"),
])
def test_bad_options_are_one_error_line(argv: list[str], message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["robustness", "default", *argv]) == 2
    assert message in error_line(capsys)


def test_a_small_run_writes_results_plots_and_the_section(
        tmp_path: Path, mnist_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(default_model_path(), run / "model.pt")
    # an evaluation to add the section to, on 100 test digits
    from cnnlab.data import load_dataset
    from cnnlab.evaluate.report import build_report

    test = load_dataset("mnist", "test", data_dir=mnist_dir).subset(range(100))
    build_report(run, dataset=test, n_boot=20, latency_runs=5, throughput_batch_size=10)
    code = main(["robustness", str(run), "--suite", "corruptions,shifts,adversarial,ood",
                 "--images", "12", "--corruptions", "fog,zigzag", "--shifts",
                 "slant,crossed_7", "--shift-spread", "--attacks", "fgsm", "--eps", "0,0.3",
                 "--ood-images", "6",
                 "--data-dir", str(mnist_dir), "--cache-dir", str(tmp_path / "cache"),
                 "--reference", "none", "--json", "-q"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = captured.out
    result = json.loads(out)
    saved = json.loads((run / "robustness.json").read_text())
    assert saved["corruptions"]["accuracy"] == result["corruptions"]["accuracy"]
    assert set(result["corruptions"]["accuracy"]) == {"fog", "zigzag"}
    assert set(result["shifts"]["curves"]) == {"slant", "crossed_7"}
    assert result["shifts"]["spread"] is True and result["shifts"]["images"] == 12
    assert result["adversarial"]["curves"]["fgsm"]["eps"] == [0.0, 0.3]
    assert result["ood"]["images_per_set"] == 6
    for name in ("corruptions", "shifts", "adversarial", "ood"):
        assert (run / "plots" / f"robustness_{name}.png").is_file()
    # the ood threshold, beside the checkpoint, where predict finds it
    assert json.loads((run / "ood.json").read_text())["threshold"] == result["ood"]["threshold"]
    from cnnlab.inference import load_model

    assert load_model(run / "model.pt").ood_threshold is not None
    # the report's section and model-card row
    report = (run / "report.md").read_text()
    assert "Robustness" in report and "Mean corruption accuracy (MNIST-C)" in report
    assert "robustness_corruptions.png" in (run / "report.html").read_text() or \
        "data:image/png" in (run / "report.html").read_text()
