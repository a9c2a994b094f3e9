"""Mitigations for a group the model fails more often: reweighting and aimed augmentation.

- :func:`group_weights`: a per-image loss weight that gives every group the same total weight
  (group-balanced reweighting), times an optional emphasis per group; training takes it as
  :attr:`cnnlab.training.data.PreparedData.train_weights`.
- :func:`vary_stroke_thickness`: a copy of the images in which a share have thinner or
  thicker strokes, aimed at the attribute the weak group differs in (high-school students
  write thinner strokes than Census Bureau employees: 2.76 against 3.17 pixels on MNIST's
  training digits, measured with :func:`cnnlab.fairness.attributes.digit_attributes`).
- :func:`mitigated_data`: the MNIST training data of a config with both applied, by the
  writer populations of the QMNIST labels.

``benchmarks/bench_fairness.py`` measures them against the plain recipe.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from cnnlab.errors import ConfigError, DataError

__all__ = ["group_weights", "mitigated_data", "vary_stroke_thickness"]


def group_weights(groups: np.ndarray, emphasis: Mapping[str, float] | None = None) -> np.ndarray:
    """float32 weights (N,), mean 1: each group weighs the same in total, times ``emphasis``.

    Raises:
        ConfigError: an emphasis that is not a finite positive number, or names no group.
        DataError: no images.
    """
    g = np.asarray(groups, dtype=str)
    if g.size == 0:
        raise DataError("group weights need at least one image")
    names, inv, counts = np.unique(g, return_inverse=True, return_counts=True)
    factor = np.ones(len(names))
    for name, value in (emphasis or {}).items():
        if name not in names:
            raise ConfigError(f"emphasis names group {name!r}, which has no images; groups: "
                              f"{', '.join(names[:10])}")
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"the emphasis of group {name!r} must be a finite number > 0. "
                              f"Got {value!r} instead.")
        factor[list(names).index(name)] = float(value)
    per_group = factor / counts  # every group the same total, times its factor
    w = per_group[inv.reshape(-1)]
    return (w / w.mean()).astype(np.float32)


def vary_stroke_thickness(images: torch.Tensor, *, p: float = 0.5, thin_share: float = 0.7,
                          seed: int = 0) -> torch.Tensor:
    """A copy of uint8 images (N, C, H, W) with a share ``p`` of them given thinner (a share
    ``thin_share`` of those) or thicker strokes: half-way to a grey erosion or dilation with a
    3x3 cross, which moves each stroke edge by about half a pixel.

    Raises:
        ConfigError: ``p`` or ``thin_share`` outside [0, 1].
    """
    from scipy import ndimage

    for name, v in (("p", p), ("thin_share", thin_share)):
        if not (isinstance(v, (int, float)) and 0 <= v <= 1):
            raise ConfigError(f"The '{name}' parameter of vary_stroke_thickness must be in "
                              f"[0, 1]. Got {v!r} instead.")
    x = images.numpy()
    rng = np.random.default_rng(seed)
    chosen = rng.random(len(x)) < p
    thin = chosen & (rng.random(len(x)) < thin_share)
    thick = chosen & ~thin
    cross = np.zeros((1, 1, 3, 3), dtype=bool)
    cross[0, 0, 1, :] = cross[0, 0, :, 1] = True
    out = x.copy()
    for mask, op in ((thin, ndimage.grey_erosion), (thick, ndimage.grey_dilation)):
        if mask.any():
            moved = op(x[mask], footprint=cross)
            out[mask] = ((x[mask].astype(np.uint16) + moved) // 2).astype(np.uint8)
    return torch.from_numpy(out)


def mitigated_data(data: Any, data_dir: str | None = None, *,
                   emphasis: Mapping[str, float] | None = None,
                   thickness_p: float = 0.0, seed: int = 0) -> Any:
    """MNIST training data (a :class:`~cnnlab.training.data.PreparedData` whose training split
    is MNIST train, or a subset listed in its manifest) with population-balanced weights (times
    ``emphasis``) and, when ``thickness_p > 0``, varied stroke thickness.

    Raises:
        DataError: the data is not MNIST's training split (no writer metadata to use).
    """
    import dataclasses

    from cnnlab.data import ImageDataset
    from cnnlab.data.qmnist import load_writers

    manifest = data.manifest or {}
    if manifest.get("dataset") != "mnist":
        raise DataError("writer-population mitigations need MNIST (the QMNIST writer labels); "
                        f"got {manifest.get('dataset') or 'a folder'}")
    idx = np.asarray(manifest["splits"]["train"]["indices"], dtype=np.int64)
    labels = load_writers("train", data_dir=data_dir)
    labels.check_targets(_full_targets(labels, idx, data.train.targets.numpy()))
    weights = torch.from_numpy(group_weights(labels.population[idx], emphasis))
    train = data.train
    if thickness_p > 0:
        train = ImageDataset(vary_stroke_thickness(train.images, p=thickness_p, seed=seed),
                             train.targets, train.classes, train.name, train.source)
    return dataclasses.replace(data, train=train, train_weights=weights)


def _full_targets(labels: Any, idx: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The subset's targets placed into the full split (the others taken as QMNIST's), so the
    check compares exactly the images we use."""
    full = labels.classes.copy()
    full[idx] = targets
    return full
