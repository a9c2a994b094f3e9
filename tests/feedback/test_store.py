"""``cnnlab feedback stats`` and ``export`` on a store with rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import error_line
from cnnlab.cli.main import main
from cnnlab.feedback.store import DuplicateFeedback, Feedback, FeedbackStore


def _row(pid: str, predicted: str, label: str, t: float) -> Feedback:
    from synth import make_png

    return Feedback(prediction_id=pid, predicted=predicted, label=label, model_version="v1",
                    created=t, image_png=make_png())


def test_stats_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'fb.db'}"
    store = FeedbackStore(url)
    store.add(_row("p1", "3", "3", 0.0))
    store.add(_row("p2", "3", "8", 10.0))
    store.add(_row("p3", "1", "1", 90_000.0))
    with pytest.raises(DuplicateFeedback):
        store.add(_row("p1", "3", "3", 5.0))
    assert main(["feedback", "stats", "--store", url, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["feedback"] == 3 and s["corrected"] == 1
    assert s["accuracy"] == pytest.approx(2 / 3) and s["corrections"] == {"3->8": 1}
    assert [b["feedback"] for b in s["over_time"]] == [2, 1]
    assert main(["feedback", "stats", "--store", url]) == 0
    assert "accuracy on feedback 66.67%" in capsys.readouterr().out
    assert main(["feedback", "export", "--store", url, "--out", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["1", "3", "8"]
    assert main(["feedback", "stats", "--store", str(tmp_path / "none.db")]) == 2
    assert "no feedback store" in error_line(capsys)


def test_drift_of_predicted_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cnnlab.feedback.drift import drift, reference_shares

    assert drift({"a": 5, "b": 5}, {"a": 0.5, "b": 0.5}) == 0.0
    assert drift({"a": 10}, {"a": 0.5, "b": 0.5}) == pytest.approx(0.5)
    assert drift({"c": 3}, {"a": 0.5, "b": 0.5}) == pytest.approx(1.0)

    from types import SimpleNamespace

    model = SimpleNamespace(classes=["a", "b"],
                            metrics={"train_class_counts": {"a": 30, "b": 10}})
    assert reference_shares(model) == {"a": 0.75, "b": 0.25}
    model.metrics = {}
    assert reference_shares(model) == {"a": 0.5, "b": 0.5}
    url = f"sqlite:///{tmp_path / 'fb.db'}"
    store = FeedbackStore(url)
    for i in range(4):
        store.add(_row(f"p{i}", "1", "1", float(i)))
    assert store.stats(reference={str(k): 0.1 for k in range(10)})["predicted_drift"] == \
        pytest.approx(0.9)
    assert main(["feedback", "stats", "--store", url, "--model", "default"]) == 0
    assert "drift of the predicted classes" in capsys.readouterr().out
