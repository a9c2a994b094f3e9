"""The feedback store: users' confirmations and corrections of predictions, durably kept.

A database URL picks the backend (SQLAlchemy): ``sqlite:///feedback.db`` is the embedded
default, in WAL mode with full synchronisation, so every acknowledged feedback survives a
crash of the service; a PostgreSQL URL (``postgresql+psycopg://...``, with the driver of
``cnnlab[postgres]``) lets several service instances share one store. Both are tested
(tests/feedback/test_store_backends.py; PostgreSQL on a throwaway server where Debian's
``postgresql`` package is installed). Each row holds the prediction id, the model's label,
the user's label, the model version, the time, and the input the model saw (PNG bytes).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.feedback.drift import drift

__all__ = ["DuplicateFeedback", "Feedback", "FeedbackStore", "png_bytes", "store_url"]


class DuplicateFeedback(CnnlabError):
    """Feedback for a prediction that already has some."""


@dataclass(frozen=True)
class Feedback:
    prediction_id: str
    predicted: str
    label: str
    model_version: str
    created: float
    image_png: bytes


def store_url(url_or_path: str) -> str:
    """A database URL for a URL or a plain SQLite file path."""
    return url_or_path if "://" in url_or_path else f"sqlite:///{url_or_path}"


class FeedbackStore:
    """Feedback rows in a database; safe to share between threads. :meth:`close` (or a
    ``with`` block) closes its connections."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        self.url = store_url(url)
        if self.url.startswith("sqlite:///"):
            Path(self.url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine = sa.create_engine(self.url, connect_args={"timeout": 30}
                                           if self.url.startswith("sqlite") else {})
        except Exception as e:
            raise ConfigError(f"cannot open the feedback store {self.url!r}: {e}") from e
        if self.url.startswith("sqlite"):
            @sa.event.listens_for(self.engine, "connect")
            def _pragmas(conn: Any, record: Any) -> None:
                cur = conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")  # acknowledged means on disk
                cur.close()

        meta = sa.MetaData()
        self.table = sa.Table(
            "feedback", meta,
            sa.Column("prediction_id", sa.String(64), primary_key=True),
            sa.Column("predicted", sa.String(200), nullable=False),
            sa.Column("label", sa.String(200), nullable=False),
            sa.Column("model_version", sa.String(64), nullable=False),
            sa.Column("created", sa.Float, nullable=False, index=True),
            sa.Column("image_png", sa.LargeBinary, nullable=False),
        )
        try:
            meta.create_all(self.engine)
        except Exception as e:
            raise ConfigError(f"cannot open the feedback store {self.url!r}: {e}") from e

    def close(self) -> None:
        """Close the pooled connections (a PostgreSQL server keeps one per connection)."""
        self.engine.dispose()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, fb: Feedback) -> None:
        """Store one feedback row, committed before returning.

        Raises:
            DuplicateFeedback: the prediction already has feedback.
        """
        import sqlalchemy as sa

        try:
            with self.engine.begin() as conn:
                conn.execute(self.table.insert().values(
                    prediction_id=fb.prediction_id, predicted=fb.predicted, label=fb.label,
                    model_version=fb.model_version, created=fb.created,
                    image_png=fb.image_png))
        except sa.exc.IntegrityError as e:
            raise DuplicateFeedback(
                f"prediction {fb.prediction_id} already has feedback") from e

    def rows(self) -> list[Feedback]:
        with self.engine.connect() as conn:
            result = conn.execute(self.table.select().order_by(self.table.c.created))
            return [Feedback(**dict(r._mapping)) for r in result]

    def count(self) -> int:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.table))
                       .scalar_one())

    def stats(self, *, bucket_s: float = 86_400,
              reference: dict[str, float] | None = None) -> dict[str, Any]:
        """Accuracy of the model on feedback (overall and per time bucket), corrections per
        class pair, the labels' distribution and, given the training data's class shares, the
        drift of the predicted classes from them (total variation distance)."""
        rows = self.rows()
        n = len(rows)
        correct = sum(r.predicted == r.label for r in rows)
        buckets: dict[int, list[int]] = {}
        for r in rows:
            b = buckets.setdefault(int(r.created // bucket_s), [0, 0])
            b[0] += r.predicted == r.label
            b[1] += 1
        pairs: dict[str, int] = {}
        labels: dict[str, int] = {}
        for r in rows:
            labels[r.label] = labels.get(r.label, 0) + 1
            if r.predicted != r.label:
                key = f"{r.predicted}->{r.label}"
                pairs[key] = pairs.get(key, 0) + 1
        return {
            "feedback": n, "confirmed": correct, "corrected": n - correct,
            "accuracy": correct / n if n else None,
            "over_time": [{"start": b * bucket_s, "feedback": t, "accuracy": c / t}
                          for b, (c, t) in sorted(buckets.items())],
            "corrections": dict(sorted(pairs.items(), key=lambda kv: -kv[1])),
            "labels": dict(sorted(labels.items())),
            "by_model_version": _by_version(rows),
            **({"predicted_drift": _tv(rows, reference)} if reference else {}),
        }

    def export(self, out: str | Path) -> dict[str, int]:
        """Write every feedback image as ``out/<label>/<prediction_id>.png``."""
        out = Path(out)
        counts: dict[str, int] = {}
        for r in self.rows():
            d = out / r.label
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{r.prediction_id}.png").write_bytes(r.image_png)
            counts[r.label] = counts.get(r.label, 0) + 1
        return dict(sorted(counts.items()))


def _tv(rows: list[Feedback], reference: dict[str, float]) -> float | None:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.predicted] = counts.get(r.predicted, 0) + 1
    return round(drift(counts, reference), 6) if counts else None


def _by_version(rows: list[Feedback]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        v = out.setdefault(r.model_version, {"feedback": 0, "confirmed": 0})
        v["feedback"] += 1
        v["confirmed"] += r.predicted == r.label
    for v in out.values():
        v["accuracy"] = v["confirmed"] / v["feedback"]
    return out


def png_bytes(x: Any) -> bytes:
    """A uint8 (C, H, W) tensor or array as PNG bytes (greyscale or RGB)."""
    from PIL import Image

    a = np.asarray(x, dtype=np.uint8)
    img = Image.fromarray(a[0]) if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
