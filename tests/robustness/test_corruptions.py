"""MNIST-C: every corruption changes a digit and is the same for the same seed; the cache
serves a second run and remakes a file that does not match its checksum."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from cnnlab.errors import ConfigError
from cnnlab.robustness.corruptions import (
    CORRUPTIONS,
    VERSION,
    check_corruptions,
    code_digest,
    corrupt_images,
    mnist_c,
)

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
    folder = tmp_path / "mnist-c" / f"v{VERSION}-{code_digest()}-seed0"
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


def test_a_cache_made_by_other_code_is_not_read(tmp_path: Path, digits: np.ndarray,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # images cached by another version of the corruptions (or of numpy, scipy, scikit-image)
    # are those of other code: they must be made again, not served
    from cnnlab.robustness import corruptions

    made: list[str] = []
    mnist_c(digits, ["stripe"], seed=0, cache_dir=tmp_path, progress=made.append)
    monkeypatch.setattr(corruptions, "code_digest", lambda: "0123456789ab")
    mnist_c(digits, ["stripe"], seed=0, cache_dir=tmp_path, progress=made.append)
    assert made == ["stripe", "stripe"]
    assert code_digest() != "0123456789ab" and len(code_digest()) == 12


def test_fog_is_a_smooth_part_of_a_larger_cloud() -> None:
    # MNIST-C's fog adds a 28x28 corner of a 256x256 plasma map normalised over the whole map:
    # over one digit the fog varies smoothly and spans about a third of [0, 1] (a fog
    # normalised over the 28x28 alone spans all of it, pixel to pixel ten times rougher)
    from cnnlab.robustness.corruptions import _fractal_noise

    rng = np.random.default_rng(0)
    fields = [_fractal_noise(rng) for _ in range(40)]
    assert all(f.shape == (28, 28) for f in fields)
    assert 0.1 < float(np.mean([f.max() - f.min() for f in fields])) < 0.5
    assert float(np.mean([np.abs(np.diff(f, axis=0)).mean() for f in fields])) < 0.02


def test_zigzag_has_mnist_c_teeth() -> None:
    # MNIST-C's zigzag: peaks 2 pixels either side of its line, 4 columns apart, so over its
    # 23 columns the strokes turn 5 or 6 times (teeth twice as dense would turn about 11)
    from cnnlab.robustness.corruptions import zigzag

    for seed in range(5):
        page = zigzag(np.zeros((28, 28)), np.random.default_rng(seed))
        rows = np.arange(28)[:, None]
        ink = page[:, 3:25]
        centre = (ink * rows).sum(0) / np.maximum(ink.sum(0), 1e-9)
        slope = np.sign(np.diff(centre))
        turns = int((slope[1:] != slope[:-1]).sum())
        assert 4 <= turns <= 7, (seed, turns)
