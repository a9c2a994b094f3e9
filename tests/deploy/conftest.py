"""A small trained convnet with a test split, shared by the deployment tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab.config import resolve_config
from cnnlab.training.loop import fit
from synth import write_image_folder


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deploy")
    write_image_folder(root / "data" / "train", n_per_class=24, num_classes=3, size=16)
    write_image_folder(root / "data" / "test", n_per_class=8, num_classes=3, size=16, seed=1)
    cfg = resolve_config({"model": {"name": "convnet"},  # big enough for INT8 to pay
                          "data": {"dataset": str(root / "data"), "image_size": 16,
                                   "val_fraction": 0.2},
                          "optim": {"lr": 0.01}, "train": {"epochs": 3, "batch_size": 16,
                                                           "threads": 1}})
    fit(cfg, out_dir=root / "run", progress=False)
    return root / "run"
