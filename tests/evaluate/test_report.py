import json
import re

import numpy as np
import pytest
import torch

from cnnlab.config import resolve_config
from cnnlab.data import ImageDataset
from cnnlab.errors import CheckpointError, ConfigError, DataError
from cnnlab.evaluate import report as report_module
from cnnlab.evaluate.report import (
    PLOT_TITLES,
    build_report,
    most_confused_pairs,
    writer_groups,
)
from cnnlab.training.loop import fit
from synth import learnable_images, prepared_data

FAST = {"n_boot": 200, "latency_runs": 5, "throughput_batch_size": 16}

MISSING = (r"missing' does not exist; pass a \.pt file written by `cnnlab train`, a run "
           r"directory that contains model\.pt, or `default`")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = resolve_config({"model": {"name": "paper-cnn-tiny"},
                          "train": {"epochs": 1, "batch_size": 16, "seed": 0, "device": "cpu"},
                          "optim": {"lr": 3e-3}})
    fit(cfg, out_dir=out, progress=False, data=prepared_data())
    return out


def _test_split():
    return prepared_data().test


def test_report_in_the_run_directory(run_dir):
    before = json.loads((run_dir / "metrics.json").read_text())
    # 10,000 images named like the MNIST test split, so the writer groups appear too
    images, targets = learnable_images(2500, 4, seed=5)
    ds = ImageDataset(images, targets, ["0", "1", "2", "3"], "mnist", "memory")
    result = build_report(run_dir / "model.pt", dataset=ds, **FAST)

    assert set(result["plots"]) == set(PLOT_TITLES)  # history.csv gives the training curves
    for rel in result["plots"].values():
        assert (run_dir / rel).stat().st_size > 0
    page = (run_dir / "report.html").read_text()
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(uris) == len(PLOT_TITLES)
    assert all(len(u) > 1000 for u in uris)
    assert "<style>" in page and "<link" not in page and "http" not in page.split("<body>")[1]
    for heading in ("Model card", "Data", "Recipe and model", "Headline metrics", "Efficiency",
                    "Known limits", "Per-class figures", "Writer groups", "Figures"):
        assert f">{heading}</h" in page, heading
    assert f"{100 * result['accuracy']:.2f} %" in page
    assert "95 % CI" in page and "paper-cnn-tiny" in page and "p95" in page
    assert "Census Bureau employees" in page and "high-school students" in page

    md = (run_dir / "report.md").read_text()
    assert md.startswith("# Evaluation report") and "## Model card" in md
    assert "![Confusion matrix](plots/confusion_matrix.png)" in md and "## Writer groups" in md

    saved = json.loads((run_dir / "metrics.json").read_text())
    assert {k: saved[k] for k in before} == before  # the training figures are kept
    ev = saved["evaluation"]
    assert ev["samples"] == 10000 and ev["accuracy"] == pytest.approx(result["accuracy"])
    low, high = ev["accuracy_ci"]
    assert 0 <= low <= ev["accuracy"] <= high <= 1
    for key in ("macro_f1", "balanced_accuracy", "top3_accuracy", "log_loss", "roc_auc_macro",
                "roc_auc_micro", "ece"):
        assert isinstance(ev[key], float), key
    eff = ev["efficiency"]
    assert eff["parameters"] > 0 and eff["macs"] > 0 and eff["checkpoint_mb"] > 0
    assert eff["train_time_s"] == before["train_time_s"]
    assert eff["latency_ms_p50"] <= eff["latency_ms_p99"]
    wg = ev["writer_groups"]
    assert [g["name"] for g in wg["groups"]] == ["SD-3", "SD-1"]
    correct = np.array(ev["confusion_matrix"]).trace()
    assert sum(g["samples"] - g["errors"] for g in wg["groups"]) == correct
    assert result["files"]["html"] == str(run_dir / "report.html")


def test_report_elsewhere_carries_the_training_figures(run_dir, tmp_path):
    training = json.loads((run_dir / "metrics.json").read_text())
    out = tmp_path / "report"
    result = build_report(run_dir, dataset=_test_split(), out_dir=out, **FAST)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test_accuracy"] == training["test_accuracy"]
    assert saved["evaluation"]["samples"] == 16 and "writer_groups" not in saved["evaluation"]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(result["plots"]) == len(PLOT_TITLES)
    assert "Writer groups" not in page


def test_writer_groups_on_synthetic_predictions():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 10, 10000)
    preds = targets.copy()
    preds[rng.choice(5000, 100, replace=False)] += 1  # SD-3: 98.0 %
    preds[5000 + rng.choice(5000, 300, replace=False)] += 1  # SD-1: 94.0 %
    preds %= 10
    wg = writer_groups(torch.from_numpy(targets), torch.from_numpy(preds), n_boot=2000)
    sd3, sd1 = wg["groups"]
    assert (sd3["images"], sd1["images"]) == ("0-4999", "5000-9999")
    assert sd3["accuracy"] == pytest.approx(0.98) and sd1["accuracy"] == pytest.approx(0.94)
    assert (sd3["errors"], sd1["errors"]) == (100, 300)
    assert wg["gap"] == pytest.approx(0.04)
    low, high = wg["gap_ci"]
    # the gap's standard error is sqrt(.98*.02/5000 + .94*.06/5000) = 0.0038
    assert low < 0.04 < high and high - low == pytest.approx(2 * 1.96 * 0.0038, rel=0.15)
    assert wg["gap_significant"]
    same = writer_groups(targets, targets, n_boot=200)
    assert same["gap"] == 0 and same["gap_ci"] == [0.0, 0.0] and not same["gap_significant"]


def test_writer_groups_need_the_whole_mnist_test_split():
    with pytest.raises(DataError, match="10,000 images; got 9999 targets and 9999 predictions"):
        writer_groups(np.zeros(9999, int), np.zeros(9999, int))


def test_most_confused_pairs():
    cm = [[5, 2, 0], [7, 3, 1], [0, 0, 9]]
    assert most_confused_pairs(cm, ["a", "b", "c"], top=5) == [
        ("b", "a", 7), ("a", "b", 2), ("b", "c", 1)]


def test_missing_run_directory(tmp_path):
    with pytest.raises(CheckpointError, match=MISSING):
        build_report(tmp_path / "missing", dataset=_test_split())


def test_bad_split_and_batch_size(run_dir):
    with pytest.raises(ConfigError, match="The 'split' parameter of build_report must be"):
        build_report(run_dir, split="validation")
    with pytest.raises(ConfigError, match="The 'batch_size' parameter of build_report must be"):
        build_report(run_dir, batch_size=0)


def test_data_that_does_not_fit_the_model(run_dir, tmp_path):
    images, targets = learnable_images(2, 4)
    other = ImageDataset(images, targets, ["a", "b", "c", "d"], "other", "memory")
    with pytest.raises(DataError, match=r"has classes \['a', 'b', 'c', 'd'\] but the model"):
        build_report(run_dir, dataset=other, out_dir=tmp_path)
    with pytest.raises(DataError, match="neither a known dataset"):
        build_report(run_dir, dataset=str(tmp_path / "missing"), out_dir=tmp_path)


def test_all_is_exported():
    for name in report_module.__all__:
        assert hasattr(report_module, name)


@pytest.mark.slow
def test_report_of_a_real_mnist_model(mnist_dir, tmp_path):
    # image_size 20: the report must resize the test split as training did
    cfg = resolve_config({"model": {"name": "paper-cnn-tiny"},
                          "data": {"dataset": "mnist", "data_dir": str(mnist_dir), "limit": 600,
                                   "image_size": 20},
                          "train": {"epochs": 1, "batch_size": 32, "seed": 0, "device": "cpu"}})
    fit(cfg, out_dir=tmp_path, progress=False)
    result = build_report(tmp_path, **FAST)
    assert result["dataset"] == "mnist" and result["samples"] == 10000
    assert result["accuracy"] > 0.5
    sd3, sd1 = result["writer_groups"]["groups"]
    assert sd3["samples"] == sd1["samples"] == 5000
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(PLOT_TITLES)
    assert "digits centred like MNIST" in page and ">Writer groups</h2>" in page
