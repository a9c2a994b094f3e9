"""MNIST-C: every corruption changes a digit and is the same for the same seed; the cache
serves a second run and remakes a file that does not match its checksum."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from cnnlab.errors import ConfigError
from cnnlab.robustness.corruptions import CORRUPTIONS, check_corruptions, corrupt_images, mnist_c

# corruptions without randomness: the same for every seed
_FIXED = {"brightness", "canny_edges", "scale", "stripe"}


def test_the_fifteen_of_the_paper() -> None:
    assert len(CORRUPTIONS) == 15
    assert {"shot_noise", "motion_blur", "canny_edges", "zigzag"} <= set(CORRUPTIONS)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_is_deterministic_and_changes_the_digit(name: str,
                                                                digits: np.ndarray) -> None:
    first = corrupt_images(name, digits, seed=3)
    again = corrupt_images(name, digits, seed=3)
    assert first.dtype == np.uint8 and first.shape == digits.shape
    np.testing.assert_array_equal(first, again)
    changed = (first.astype(int) != digits).reshape(len(digits), -1).any(axis=1)
    assert changed.all(), f"{name} left {int((~changed).sum())} digits unchanged"
    if name not in _FIXED:
        assert not np.array_equal(corrupt_images(name, digits, seed=4), first)


def test_a_longer_run_starts_with_the_same_images(digits: np.ndarray) -> None:
    np.testing.assert_array_equal(corrupt_images("spatter", digits[:2], seed=1),
                                  corrupt_images("spatter", digits, seed=1)[:2])


def test_unknown_corruption_suggests_the_close_name() -> None:
    with pytest.raises(ConfigError, match="unknown corruption 'motion_blurr'; did you mean "
                                          "'motion_blur'"):
        check_corruptions(["shot_noise", "motion_blurr"])


def test_cache_serves_the_second_run_and_checks_the_files(
        tmp_path: Path, digits: np.ndarray, caplog: pytest.LogCaptureFixture) -> None:
    made: list[str] = []
    names = ["fog", "stripe"]
    first = mnist_c(digits, names, seed=0, cache_dir=tmp_path, progress=made.append)
    assert made == names
    folder = tmp_path / "mnist-c" / "v1-seed0"
    assert (folder / "fog.idx.gz").is_file() and (folder / "checksums.json").is_file()
    made.clear()
    again = mnist_c(digits[:4], names, seed=0, cache_dir=tmp_path, progress=made.append)
    assert made == []  # read, not made: the first 4 of the cached 6
    np.testing.assert_array_equal(again["fog"], first["fog"][:4])
    # a file that no longer matches its checksum is made again, with a warning
    from cnnlab.data import write_idx

    write_idx(folder / "stripe.idx.gz", np.zeros((6, 28, 28), np.uint8))
    with caplog.at_level(logging.WARNING, logger="cnnlab"):
        fixed = mnist_c(digits, names, seed=0, cache_dir=tmp_path, progress=made.append)
    assert made == ["stripe"] and "checksum" in caplog.text
    np.testing.assert_array_equal(fixed["stripe"], first["stripe"])
    # other digits are not served from a cache made of these
    made.clear()
    mnist_c(255 - digits, ["fog"], seed=0, cache_dir=tmp_path, progress=made.append)
    assert made == ["fog"]
