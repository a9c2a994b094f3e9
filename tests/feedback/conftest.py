"""A small trained 28x28 model of three classes: the champion the feedback tests retrain."""

from __future__ import annotations

from pathlib import Path

import pytest

from synth import train_small_abc_model


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_abc_model(tmp_path_factory.mktemp("feedback"))
