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


def _fake_writer_labels(targets, monkeypatch):
    """QMNIST labels that describe ``targets``: students wrote 0-4999, employees the rest."""
    from cnnlab.data import qmnist

    t = np.asarray(targets, dtype=np.int64)
    series = np.where(np.arange(len(t)) < 5000, 4, 0)
    writer = np.where(series == 4, 2100, 0) + np.arange(len(t)) // 50
    fake = qmnist.WriterLabels("test", t, series, writer, "memory")
    monkeypatch.setattr(qmnist, "load_writers", lambda split, data_dir=None: fake)


def test_report_in_the_run_directory(run_dir, monkeypatch):
    before = json.loads((run_dir / "metrics.json").read_text())
    # 10,000 images named like the MNIST test split, with writer labels, so the groups appear
    images, targets = learnable_images(2500, 4, seed=5)
    ds = ImageDataset(images, targets, ["0", "1", "2", "3"], "mnist", "memory")
    _fake_writer_labels(targets, monkeypatch)
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
    assert [g["name"] for g in wg["groups"]] == ["students", "employees"]
    assert "0-5000 were written by high-school students" in page
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


@pytest.fixture(scope="module")
def mnist_test_targets(mnist_dir):
    from cnnlab.data import read_idx

    return read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz").astype(np.int64)


def test_writer_groups_come_from_the_qmnist_labels(mnist_test_targets, mnist_dir):
    from cnnlab.data.qmnist import load_writers

    targets = mnist_test_targets
    population = load_writers("test", data_dir=mnist_dir).population
    rng = np.random.default_rng(0)
    preds = targets.copy()
    students, employees = (np.flatnonzero(population == p) for p in ("student", "employee"))
    preds[rng.choice(students, 300, replace=False)] += 1  # students: 300 of 5001 wrong
    preds[rng.choice(employees, 100, replace=False)] += 1  # employees: 100 of 4999 wrong
    preds %= 10
    wg = writer_groups(torch.from_numpy(targets), torch.from_numpy(preds), n_boot=2000,
                       data_dir=mnist_dir)  # the labels in qmnist/ beside the MNIST folder
    st, em = wg["groups"]
    assert (st["name"], em["name"]) == ("students", "employees")
    assert (st["samples"], em["samples"]) == (5001, 4999)  # one student digit in 5000-9999
    assert (st["images"], em["images"]) == ("0-5000", "5001-9999")
    assert (st["errors"], em["errors"]) == (300, 100)
    assert (st["writer_count"], em["writer_count"]) == (249, 48)
    assert st["accuracy"] == pytest.approx(1 - 300 / 5001)
    assert wg["gap"] == pytest.approx(300 / 5001 - 100 / 4999)
    low, high = wg["gap_ci"]
    assert low < wg["gap"] < high and wg["gap_significant"]
    # errors spread at random over writers: the writer bootstrap's width is near the
    # binomial one, sqrt(p1 q1 / n1 + p2 q2 / n2) = 0.0040
    assert high - low == pytest.approx(2 * 1.96 * 0.0040, rel=0.3)
    same = writer_groups(targets, targets, n_boot=200, data_dir=mnist_dir)
    assert same["gap"] == 0 and same["gap_ci"] == [0.0, 0.0] and not same["gap_significant"]


def test_writer_groups_need_the_whole_mnist_test_split(mnist_test_targets, mnist_dir):
    with pytest.raises(DataError, match="10,000 images; got 9999 targets and 9999 predictions"):
        writer_groups(np.zeros(9999, int), np.zeros(9999, int))
    shuffled = np.roll(mnist_test_targets, 1)
    with pytest.raises(DataError, match="disagree"):
        writer_groups(shuffled, shuffled, data_dir=mnist_dir)


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
    students, employees = result["writer_groups"]["groups"]
    assert (students["samples"], employees["samples"]) == (5001, 4999)
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(PLOT_TITLES)
    assert "digits centred like MNIST" in page and ">Writer groups</h2>" in page
