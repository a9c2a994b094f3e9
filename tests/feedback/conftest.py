"""A small trained 28x28 model of three classes: the champion the feedback tests retrain; the
feedback store on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from synth import train_small_abc_model


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_abc_model(tmp_path_factory.mktemp("feedback"))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster's URL (tests/feedback/pg_cluster.py); skips, with the
    reason, where PostgreSQL or its driver is not installed."""
    from pg_cluster import postgres_cluster, unavailable

    why = unavailable()
    if why is not None:
        pytest.skip(why)
    with postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The feedback store's URL on each backend: an SQLite file, and an empty feedback table
    in the session's PostgreSQL cluster."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedback.db'}"
    url: str = request.getfixturevalue("postgres_url")
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS feedback"))
    engine.dispose()
    return url
