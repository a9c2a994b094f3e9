"""Stratified train/validation splits and k folds."""

import re

import numpy as np
import pytest
import torch

from cnnlab.data import stratified_kfold, stratified_split
from cnnlab.errors import ConfigError, DataError

TARGETS = np.repeat(np.arange(4), [100, 37, 2, 1])  # uneven classes, a pair and a singleton


def test_split_is_stratified_and_complete():
    train, val = stratified_split(TARGETS, 0.2, seed=0)
    assert train.dtype == val.dtype == np.int64
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(TARGETS)))
    assert np.all(np.diff(val) > 0) and np.all(np.diff(train) > 0)  # sorted, no repeats
    counts = np.bincount(TARGETS[val], minlength=4).tolist()
    assert counts == [20, 7, 1, 0]  # round(n * 0.2); a pair gives 1; a singleton stays in train


def test_split_is_reproducible():
    a = stratified_split(torch.from_numpy(TARGETS), 0.3, seed=7)
    b = stratified_split(TARGETS.tolist(), 0.3, seed=7)
    c = stratified_split(TARGETS, 0.3, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


def test_split_small_fraction_still_gives_each_class_one():
    _, val = stratified_split(TARGETS, 0.001, seed=0)
    assert np.bincount(TARGETS[val], minlength=4).tolist() == [1, 1, 1, 0]


def test_zero_fraction():
    train, val = stratified_split(TARGETS, 0.0)
    assert len(train) == len(TARGETS) and len(val) == 0


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, "0.2", True, None])
def test_bad_fraction(bad):
    message = (
        "The 'val_fraction' parameter of stratified_split must be a float in the range [0, 1). "
        f"Got {bad!r} instead."
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        stratified_split(TARGETS, bad)


@pytest.mark.parametrize("bad", [np.zeros((2, 2), int), np.array([0.5, 1.0]), np.array([-1, 0])])
def test_bad_targets(bad):
    with pytest.raises(DataError, match="stratified_split: targets must be"):
        stratified_split(bad, 0.5)


def test_kfold_partitions_and_balances():
    targets = np.repeat(np.arange(3), [50, 23, 10])
    folds = stratified_kfold(targets, 5, seed=1)
    assert len(folds) == 5
    vals = [val for _, val in folds]
    assert np.array_equal(np.sort(np.concatenate(vals)), np.arange(len(targets)))
    sizes = [len(v) for v in vals]
    assert max(sizes) - min(sizes) <= 1
    for train, val in folds:
        assert np.intersect1d(train, val).size == 0 and len(train) + len(val) == len(targets)
    per_class = np.array([np.bincount(targets[v], minlength=3) for v in vals])
    assert (per_class.max(0) - per_class.min(0) <= 1).all()  # every class spread evenly
    again = stratified_kfold(targets, 5, seed=1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))


def test_kfold_warns_about_tiny_classes():
    with pytest.warns(UserWarning, match="least populated class has only 1 samples, fewer than k="):
        stratified_kfold(TARGETS, 2)


@pytest.mark.parametrize("k", [1, 141, 2.0, True])
def test_kfold_bad_k(k):
    with pytest.raises(ConfigError, match=re.escape(
        f"The 'k' parameter of stratified_kfold must be an int in the range [2, 140] "
        f"(the number of samples). Got {k!r} instead."
    )):
        stratified_kfold(TARGETS, k)
