"""Seeded, stratified index splits: a train/validation split and k folds.

Both work on the targets alone and return sorted int64 index arrays, so the same seed gives
the same split on any machine, and :meth:`ImageDataset.subset` takes the result directly.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from cnnlab.errors import ConfigError, DataError

__all__ = ["stratified_kfold", "stratified_split"]


def _as_targets(targets: Sequence[int] | np.ndarray | torch.Tensor, caller: str) -> np.ndarray:
    if isinstance(targets, torch.Tensor):
        targets = targets.detach().cpu().numpy()
    array = np.asarray(targets)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise DataError(
            f"{caller}: targets must be a 1-D array of integer class indices, got "
            f"{array.dtype} of shape {array.shape}"
        )
    if array.size and array.min() < 0:
        raise DataError(f"{caller}: targets must be >= 0, found {int(array.min())}")
    return array.astype(np.int64, copy=False)


def _by_class(targets: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled indices of each class present, in class order (so the seed fixes the result)."""
    order = np.argsort(targets, kind="stable")
    bounds = np.flatnonzero(np.diff(targets[order])) + 1
    return [rng.permutation(group) for group in np.split(order, bounds) if group.size]


def stratified_split(
    targets: Sequence[int] | np.ndarray | torch.Tensor,
    val_fraction: float,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into train and validation sets with the class proportions of ``targets``.

    Each class gives ``round(n * val_fraction)`` samples to validation, at least 1 and at
    most ``n - 1`` when it has ``n >= 2`` samples (so every class is seen in both sets); a
    class with a single sample stays in train. ``val_fraction=0`` gives an empty validation set.

    Returns:
        ``(train_idx, val_idx)``: sorted int64 arrays, disjoint, covering every index.

    Raises:
        ConfigError: ``val_fraction`` is not in [0, 1).
        DataError: ``targets`` is not a 1-D array of non-negative integers.
    """
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, numbers.Real)
        or not 0 <= val_fraction < 1
    ):
        raise ConfigError(
            "The 'val_fraction' parameter of stratified_split must be a float in the range "
            f"[0, 1). Got {val_fraction!r} instead."
        )
    labels = _as_targets(targets, "stratified_split")
    if val_fraction == 0:
        return np.arange(len(labels), dtype=np.int64), np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    val_parts = []
    for group in _by_class(labels, rng):
        n = len(group)
        n_val = min(max(round(n * val_fraction), 1), n - 1)
        val_parts.append(group[:n_val])
    val_idx = np.sort(np.concatenate(val_parts)) if val_parts else np.empty(0, dtype=np.int64)
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx.astype(np.int64)


def stratified_kfold(
    targets: Sequence[int] | np.ndarray | torch.Tensor,
    k: int,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train, validation) index pairs; the validation parts partition the data.

    Each class is dealt round-robin over the folds, so class proportions match in every
    fold and fold sizes differ by at most one. A class with fewer than ``k`` samples is
    missing from some folds; that is allowed but warned about.

    Raises:
        ConfigError: ``k`` is not an int with ``2 <= k <= len(targets)``.
        DataError: ``targets`` is not a 1-D array of non-negative integers.
    """
    labels = _as_targets(targets, "stratified_kfold")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 2 <= k <= len(labels):
        raise ConfigError(
            f"The 'k' parameter of stratified_kfold must be an int in the range "
            f"[2, {len(labels)}] (the number of samples). Got {k!r} instead."
        )
    rng = np.random.default_rng(seed)
    groups = _by_class(labels, rng)
    smallest = min(len(g) for g in groups)
    if smallest < k:
        warnings.warn(
            f"stratified_kfold: the least populated class has only {smallest} samples, fewer "
            f"than k={k}; some folds will have no sample of it",
            UserWarning,
            stacklevel=2,
        )
    dealt = np.concatenate(groups)
    fold_of = np.empty(len(labels), dtype=np.int64)
    fold_of[dealt] = np.arange(len(dealt)) % k
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]
