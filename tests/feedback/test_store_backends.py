"""The feedback store on both backends it claims, SQLite and PostgreSQL (a real server: the
``postgres_url`` fixture starts one, or skips saying why)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from cnnlab.cli.main import main
from cnnlab.feedback.store import DuplicateFeedback, Feedback, FeedbackStore


def _row(pid: str, predicted: str, label: str, t: float, image: bytes = b"") -> Feedback:
    from synth import make_png

    return Feedback(prediction_id=pid, predicted=predicted, label=label, model_version="v1",
                    created=t, image_png=image or make_png())


def test_rows_duplicates_and_stats(store_url: str) -> None:
    with FeedbackStore(store_url) as store:
        _rows_duplicates_and_stats(store)


def _rows_duplicates_and_stats(store: FeedbackStore) -> None:
    store.add(_row("p1", "3", "3", 0.0))
    store.add(_row("p2", "3", "8", 10.0))
    store.add(_row("p3", "1", "1", 90_000.0))
    with pytest.raises(DuplicateFeedback, match="p1 already has feedback"):
        store.add(_row("p1", "3", "3", 5.0))
    assert store.count() == 3
    assert [r.prediction_id for r in store.rows()] == ["p1", "p2", "p3"]  # by time
    s = store.stats(reference={"1": 0.5, "3": 0.5})
    assert (s["feedback"], s["corrected"], s["corrections"]) == (3, 1, {"3->8": 1})
    assert [b["feedback"] for b in s["over_time"]] == [2, 1]
    assert s["predicted_drift"] == pytest.approx(1 / 6, abs=1e-6)


def test_what_is_stored_comes_back_exactly_and_survives_a_reopen(store_url: str) -> None:
    import os

    image = os.urandom(300_000)  # bytes as they are, not text: a large PNG's size
    with FeedbackStore(store_url) as store:
        store.add(_row("ü-1", "Straße", "日本", 1.5, image))
    with FeedbackStore(store_url) as again:  # as a restarted service would
        (row,) = again.rows()
    assert (row.prediction_id, row.predicted, row.label, row.created) == ("ü-1", "Straße",
                                                                          "日本", 1.5)
    assert row.image_png == image


def test_concurrent_writers_lose_nothing_and_one_duplicate_wins(store_url: str) -> None:
    store = FeedbackStore(store_url)
    errors: list[BaseException] = []
    duplicates: list[str] = []

    def write(worker: int) -> None:
        try:
            for i in range(15):
                store.add(_row(f"w{worker}-{i}", "a", "b" if i % 3 else "a", float(i)))
            try:
                store.add(_row("shared", "a", "a", 99.0))
            except DuplicateFeedback:
                duplicates.append(f"w{worker}")
        except BaseException as e:  # reported below: a thread's failure must fail the test
            errors.append(e)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors
        assert store.count() == 6 * 15 + 1 and len(duplicates) == 5
    finally:
        store.close()


def test_cli_stats_and_export(store_url: str, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    with FeedbackStore(store_url) as store:
        store.add(_row("p1", "3", "3", 0.0))
        store.add(_row("p2", "3", "8", 1.0))
    assert main(["feedback", "stats", "--store", store_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(0.5)
    assert main(["feedback", "export", "--store", store_url, "--out", str(tmp_path / "x")]) == 0
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["3", "8"]
