"""Writer-aware validation and cross-validation, and the loss weights that reweighting uses."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.config import resolve_config
from cnnlab.data.qmnist import load_writers, writer_disjoint_split, writer_kfold
from cnnlab.errors import ConfigError
from cnnlab.training.data import prepare_data
from cnnlab.training.loop import fit
from synth import prepared_data


def test_writer_kfold_never_splits_a_writer() -> None:
    rng = np.random.default_rng(0)
    writers = rng.integers(0, 40, 800)
    targets = rng.integers(0, 10, 800)
    splits = writer_kfold(writers, targets, 5, seed=3)
    held = np.concatenate([v for _, v in splits])
    assert sorted(held.tolist()) == list(range(800))  # every image held out exactly once
    for train_idx, val_idx in splits:
        assert not set(writers[train_idx]) & set(writers[val_idx])
        assert len(np.intersect1d(train_idx, val_idx)) == 0
    with pytest.raises(ConfigError, match="at least 50 writers"):
        writer_kfold(writers, targets, 50, seed=0)


def test_writer_disjoint_split() -> None:
    writers = np.repeat(np.arange(24), 10)
    keep, held = writer_disjoint_split(writers, 0.25, seed=0)
    assert len(keep) + len(held) == 240
    assert not set(writers[keep]) & set(writers[held])
    assert len(np.unique(writers[held])) == 6
    with pytest.raises(ConfigError, match="'fraction'"):
        writer_disjoint_split(writers, 1.0, seed=0)


def test_mnist_writer_validation_split(mnist_dir: Path) -> None:
    cfg = resolve_config({"data": {"data_dir": str(mnist_dir), "val_split": "writer"}})
    data = prepare_data(cfg.data, seed=0, progress=False)
    train_idx = np.asarray(data.manifest["splits"]["train"]["indices"])
    val_idx = np.asarray(data.manifest["splits"]["val"]["indices"])
    assert data.manifest["splits"]["val"]["by"] == "writer"
    writers = load_writers("train", data_dir=mnist_dir).writer
    assert not set(writers[train_idx]) & set(writers[val_idx])
    assert 0.05 < len(val_idx) / 60000 < 0.12  # about val_fraction (1/12), in whole writers
    stratified = prepare_data(cfg.data.__class__(data_dir=str(mnist_dir)), seed=0,
                              progress=False)
    shared = set(writers[np.asarray(stratified.manifest["splits"]["train"]["indices"])]) & set(
        writers[np.asarray(stratified.manifest["splits"]["val"]["indices"])])
    assert len(shared) > 400  # a stratified split puts almost every writer on both sides


def test_writer_validation_needs_writer_metadata(tmp_path: Path) -> None:
    from synth import write_image_folder

    folder = write_image_folder(tmp_path / "f", n_per_class=8, num_classes=2)
    cfg = resolve_config({"data": {"dataset": str(folder), "val_split": "writer"}})
    with pytest.raises(ConfigError, match="needs writer metadata"):
        prepare_data(cfg.data, seed=0, progress=False)
    with pytest.raises(ConfigError, match=r"data\.val_split"):
        resolve_config({"data": {"val_split": "by-writer"}})


def _fit(weights: torch.Tensor | None):
    data = prepared_data(n_per_class=8, num_classes=4)
    data = dataclasses.replace(data, train_weights=weights)
    cfg = resolve_config({"model": {"name": "paper-cnn-tiny"},
                          "train": {"epochs": 1, "batch_size": 8, "seed": 0, "device": "cpu"}})
    return fit(cfg, data=data, progress=False)


def test_loss_weights_reach_the_training_step() -> None:
    n = 32
    ones = _fit(torch.ones(n))
    plain = _fit(None)
    # weights of 1 are the plain loss: the same training
    for a, b in zip(ones.model.state_dict().values(), plain.model.state_dict().values(),
                    strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)
    skewed = torch.ones(n)
    skewed[::2] = 0.01
    other = _fit(skewed)
    diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(
        other.model.state_dict().values(), plain.model.state_dict().values(), strict=True))
    assert diff > 1e-4


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::cnnlab.evaluate.metrics.UndefinedMetricWarning")
def test_cv_group_by_writer(mnist_dir: Path, tmp_path: Path) -> None:
    from cnnlab.tune import cross_validate

    cfg = resolve_config({"model": {"name": "paper-cnn-tiny"},
                          "data": {"data_dir": str(mnist_dir), "limit": 300},
                          "train": {"epochs": 1, "batch_size": 32, "device": "cpu"}})
    result = cross_validate(cfg, 3, out_dir=tmp_path / "cv", progress=False, group_by="writer")
    assert result["group_by"] == "writer"
    manifest = json.loads((tmp_path / "cv" / "folds.json").read_text())
    fold_of = np.asarray(manifest["fold_of"])
    data = prepare_data(dataclasses.replace(cfg.data, val_fraction=0.0), seed=0, progress=False)
    idx = np.asarray(data.manifest["splits"]["train"]["indices"])
    writers = load_writers("train", data_dir=mnist_dir).writer[idx]
    for w in np.unique(writers):
        assert len(set(fold_of[writers == w].tolist())) == 1  # a writer is in one fold only
    assert manifest["group_by"] == "writer"
