"""Digit attributes measured from images, quantile groups, and the mitigations' pieces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.errors import ConfigError, DataError
from cnnlab.fairness.attributes import digit_attributes, quantile_groups
from cnnlab.fairness.mitigation import group_weights, vary_stroke_thickness


def _stroke(width: int, *, slant: float = 0.0, length: int = 16) -> np.ndarray:
    """A vertical stroke of ``width`` pixels, sheared by ``slant`` (x moves right as y goes up)."""
    img = np.zeros((28, 28), dtype=np.uint8)
    for y in range(6, 6 + length):
        x0 = round(12 + slant * (14 - y))
        img[y, x0:x0 + width] = 255
    return img


def test_thickness_slant_size_and_ink() -> None:
    images = np.stack([_stroke(2), _stroke(4), _stroke(3, slant=0.5), np.zeros((28, 28),
                                                                               np.uint8)])
    a = digit_attributes(images[:, None])  # (N, 1, H, W)
    assert a["thickness"][0] == pytest.approx(2, abs=0.3)
    assert a["thickness"][1] == pytest.approx(4, abs=0.6)
    assert a["slant"][0] == pytest.approx(0, abs=0.01)
    assert a["slant"][2] == pytest.approx(0.5, abs=0.1)  # leans right, as "/"
    assert a["size"][1] == pytest.approx(16 * 4 / 784)
    assert a["ink"][1] == pytest.approx(2 * a["ink"][0])
    assert (a["thickness"][3], a["slant"][3], a["size"][3], a["ink"][3]) == (0, 0, 0, 0)
    with pytest.raises(DataError, match="need images"):
        digit_attributes(np.zeros((28, 28)))


def test_quantile_groups() -> None:
    values = np.arange(100, dtype=float)
    labels, order = quantile_groups(values, 4, name="ink")
    assert len(order) == 4 and order[0].startswith("ink Q1 [0, ")
    assert [int((labels == o).sum()) for o in order] == [25, 25, 25, 25]
    assert labels[0] == order[0] and labels[-1] == order[-1]
    same, one = quantile_groups(np.ones(10), 4)
    assert len(one) == 1 and (same == one[0]).all()  # tied edges merge
    with pytest.raises(ConfigError, match="'bins'"):
        quantile_groups(values, 1)
    with pytest.raises(DataError, match="finite"):
        quantile_groups(np.array([1.0, np.nan]), 2)


def test_group_weights_balance_the_groups() -> None:
    groups = np.array(["a"] * 30 + ["b"] * 10)
    w = group_weights(groups)
    assert w.mean() == pytest.approx(1.0)
    assert w[groups == "a"].sum() == pytest.approx(w[groups == "b"].sum())
    w2 = group_weights(groups, {"b": 2.0})
    assert w2[groups == "b"].sum() == pytest.approx(2 * w2[groups == "a"].sum())
    with pytest.raises(ConfigError, match="no images"):
        group_weights(groups, {"c": 2.0})
    with pytest.raises(ConfigError, match="finite number > 0"):
        group_weights(groups, {"a": float("inf")})


def test_vary_stroke_thickness_thins_and_thickens() -> None:
    images = torch.from_numpy(np.stack([_stroke(4)] * 200)[:, None])
    base = digit_attributes(images.numpy())["thickness"].mean()
    thin = digit_attributes(vary_stroke_thickness(images, p=1.0, thin_share=1.0).numpy())
    thick = digit_attributes(vary_stroke_thickness(images, p=1.0, thin_share=0.0).numpy())
    assert thin["thickness"].mean() < base - 0.3 and thick["thickness"].mean() > base + 0.3
    same = vary_stroke_thickness(images, p=0.0)
    assert torch.equal(same, images) and same is not images
    half = vary_stroke_thickness(images, p=0.5, seed=1)
    changed = (half != images).flatten(1).any(1).float().mean().item()
    assert 0.35 < changed < 0.65
    with pytest.raises(ConfigError, match="'p'"):
        vary_stroke_thickness(images, p=1.5)
