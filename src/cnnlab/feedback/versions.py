"""The model registry: every challenger ``retrain`` made, and which of them are promoted.

A table ``models`` in the feedback store's database (so several service instances sharing a
store share the registry too): version number, checkpoint path, time, whether it was
promoted, and the retraining report. The newest promoted version is the current champion,
the one ``POST /v1/admin/reload`` swaps in.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["current_model", "model_entry", "register"]


def _registry(store: Any) -> Any:
    import sqlalchemy as sa

    meta = sa.MetaData()
    table = sa.Table(
        "models", meta,
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("promoted", sa.Boolean, nullable=False),
        sa.Column("report", sa.Text, nullable=False),
    )
    meta.create_all(store.engine)
    return table


def register(store: Any, path: str | Path, *, promoted: bool, report: dict[str, Any]) -> int:
    """Record a model in the registry of ``store`` (a FeedbackStore); returns its version
    number."""
    table = _registry(store)
    with store.engine.begin() as conn:
        result = conn.execute(table.insert().values(
            path=str(Path(path).resolve()), created=time.time(), promoted=promoted,
            report=json.dumps(report)))
        return int(result.inserted_primary_key[0])


def current_model(store: Any) -> dict[str, Any] | None:
    """The newest promoted model in the registry of ``store``, or None."""
    import sqlalchemy as sa

    table = _registry(store)
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.promoted)
                           .order_by(table.c.version.desc()).limit(1)).first()
    return dict(row._mapping) if row is not None else None


def model_entry(store: Any, version: int) -> dict[str, Any] | None:
    """The registry's record of ``version`` in ``store``, promoted or not, or None."""
    import sqlalchemy as sa

    table = _registry(store)
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.version == version)).first()
    return dict(row._mapping) if row is not None else None
