"""A small trained 28x28 model of three classes: the champion the feedback tests retrain."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab.config import resolve_config
from cnnlab.training.loop import fit
from synth import write_image_folder


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("feedback")
    write_image_folder(root / "data" / "train", n_per_class=16, num_classes=3, size=28,
                       classes=["a", "b", "c"])
    write_image_folder(root / "data" / "test", n_per_class=4, num_classes=3, size=28, seed=3,
                       classes=["a", "b", "c"])
    cfg = resolve_config({"model": {"name": "convnet", "width": 4},
                          "data": {"dataset": str(root / "data"), "val_fraction": 0.2},
                          "train": {"epochs": 2, "batch_size": 16, "threads": 1}})
    fit(cfg, out_dir=root / "run", progress=False)
    return root / "run"
