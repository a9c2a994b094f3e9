"""Listing run directories: summaries, tolerance of unfinished and broken runs, sorting."""

import pytest

from cnnlab.config import resolve_config
from cnnlab.errors import ConfigError
from cnnlab.training.loop import fit
from cnnlab.training.runs import COLUMNS, find_runs, list_runs, sort_runs
from synth import prepared_data


def _cfg(epochs, seed=0):
    return resolve_config({"model": {"name": "paper-cnn-tiny"},
                           "train": {"epochs": epochs, "batch_size": 16, "seed": seed,
                                     "device": "cpu"},
                           "optim": {"lr": 3e-3}})


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = prepared_data(n_per_class=6, num_classes=2, val_per_class=2, test_per_class=2)
    fit(_cfg(1), out_dir=root / "a", progress=False, data=data)
    fit(_cfg(2, seed=1), out_dir=root / "group" / "b", progress=False, data=data)
    (root / "a" / "figures").mkdir()  # a run's subfolder is not searched
    (root / "a" / "figures" / "metrics.json").write_text("{}")
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.toml").write_text("model = [[[ not toml")
    (broken / "metrics.json").write_text("{ truncated")
    unfinished = root / "group" / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.toml").write_text('[model]\nname = "lenet5"\n\n[train]\nepochs = 9\n')
    (unfinished / "history.csv").write_text("epoch,train_loss\n1,0.5\n2,0.4\n")
    (root / "empty").mkdir()
    (root / ".hidden").mkdir()
    (root / ".hidden" / "metrics.json").write_text("{}")
    return root


def test_runs_are_found_and_summarised(runs_root):
    assert [p.relative_to(runs_root).as_posix() for p in find_runs(runs_root)] == [
        "a", "broken", "group/b", "group/unfinished"]
    rows = {r["name"]: r for r in list_runs(runs_root, sort="name")}
    assert set(rows) == {"a", "broken", "group/b", "group/unfinished"}
    for r in rows.values():
        assert set(COLUMNS) <= set(r)
    a, b = rows["a"], rows["group/b"]
    assert (a["status"], a["model"], a["dataset"], a["epochs"], a["epochs_run"]) == (
        "done", "paper-cnn-tiny", "mnist", 1, 1)
    assert b["epochs"] == b["epochs_run"] == 2
    for r in (a, b):
        assert 0 <= r["val_accuracy"] <= 1 and 0 <= r["test_accuracy"] <= 1
        assert r["train_time_s"] > 0 and len(r["date"]) == len("2026-01-01 00:00")
    assert rows["broken"]["status"] == "broken"
    assert "config.toml unreadable" in rows["broken"]["problem"]
    assert "metrics.json unreadable" in rows["broken"]["problem"]
    u = rows["group/unfinished"]
    assert (u["status"], u["model"], u["epochs"], u["epochs_run"], u["test_accuracy"]) == (
        "incomplete", "lenet5", 9, 2, None)


def test_sorting_by_any_column(runs_root):
    names = [r["name"] for r in list_runs(runs_root, sort="epochs")]
    assert names == ["a", "group/b", "group/unfinished", "broken"]  # missing values last
    names = [r["name"] for r in list_runs(runs_root, sort="epochs", reverse=True)]
    assert names == ["group/unfinished", "group/b", "a", "broken"]
    names = [r["name"] for r in list_runs(runs_root, sort="name", reverse=True)]
    assert names == ["group/unfinished", "group/b", "broken", "a"]
    rows = [{"x": None, "test_accuracy": 0.5}, {"test_accuracy": 0.9}, {"test_accuracy": None}]
    assert [r["test_accuracy"] for r in sort_runs(rows, "test_accuracy", reverse=True)] == [
        0.9, 0.5, None]


def test_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"runs directory '.*nowhere' does not exist; pass the "
                                          r"directory that holds your run directories"):
        list_runs(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory of runs"):
        list_runs(tmp_path / "file.txt")
    with pytest.raises(ConfigError, match=r"cannot sort runs by 'test_acc' \(did you mean "
                                          r"'test_accuracy'\?\); sort keys: name, status"):
        list_runs(tmp_path, sort="test_acc")
    assert list_runs(tmp_path) == []
