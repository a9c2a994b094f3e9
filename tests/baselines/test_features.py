import numpy as np
import pytest
import torch

from cnnlab.baselines import FEATURES, extract_features
from cnnlab.baselines.features import (
    canny_edges,
    hog_descriptor_length,
    hog_features,
    pixel_features,
    sobel_magnitude,
)
from cnnlab.errors import RegistryError, ShapeError
from synth import learnable_images


def _step(n: int = 2, size: int = 28) -> np.ndarray:
    """Dark left half, bright right half: one vertical step edge between columns 13 and 14."""
    images = np.zeros((n, 1, size, size), dtype=np.uint8)
    images[..., size // 2:] = 255
    return images


def test_pixels_are_scaled_and_flattened():
    images, _ = learnable_images(2, 2)
    x = pixel_features(images.numpy())
    assert x.shape == (4, 784) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1
    assert np.allclose(x[0], images[0, 0].numpy().reshape(-1) / 255)


def test_sobel_of_a_step_edge():
    mag = sobel_magnitude(_step())
    assert mag.shape == (2, 28, 28)
    # both columns beside the step see a full 0 -> 1 difference: (1 + 2 + 1) / 4 / sqrt(2)
    assert np.allclose(mag[:, :, 13:15], 1 / np.sqrt(2), atol=1e-6)
    assert np.allclose(mag[:, :, :13], 0) and np.allclose(mag[:, :, 15:], 0)


def test_sobel_agrees_with_scikit_image():
    from skimage.filters import sobel

    images, _ = learnable_images(1, 3)
    ours = sobel_magnitude(images.numpy())
    for img, mag in zip(images.numpy(), ours, strict=True):
        ref = sobel(img[0].astype(np.float64) / 255)
        assert np.allclose(mag[1:-1, 1:-1], ref[1:-1, 1:-1], atol=1e-5)


def test_canny_finds_the_step_and_nothing_else():
    edges = canny_edges(_step(1))
    assert edges.shape == (1, 28, 28) and set(np.unique(edges)) <= {0.0, 1.0}
    columns = np.flatnonzero(edges[0].any(axis=0))
    assert len(columns) > 0 and set(columns) <= {13, 14}


def test_hog_length_and_values():
    images, _ = learnable_images(1, 3)
    x = hog_features(images.numpy())
    assert hog_descriptor_length(28, 28) == 1296  # 6x6 blocks x 2x2 cells x 9 orientations
    assert x.shape == (3, 1296) and np.isfinite(x).all() and x.max() > 0


def test_every_registered_feature_gives_vectors_from_tensors_and_rgb():
    images, _ = learnable_images(1, 2)
    rgb = images.expand(-1, 3, -1, -1).contiguous()
    for entry in FEATURES:
        grey = extract_features(entry.name, images)
        assert grey.ndim == 2 and len(grey) == 2 and grey.dtype == np.float32, entry.name
        assert np.allclose(extract_features(entry.name, rgb), grey, atol=1e-5), entry.name


def test_extraction_in_chunks_equals_one_pass_and_reports_progress(capsys):
    images, _ = learnable_images(3, 2)
    whole = extract_features("hog", images, chunk_size=100)
    chunked = extract_features("hog", images, chunk_size=4, progress=True, desc="hog test")
    assert np.array_equal(whole, chunked)
    assert "hog test 100%" in capsys.readouterr().err


def test_bad_input_messages():
    with pytest.raises(ShapeError, match=r"\(N, C, H, W\) with C = 1 or 3\. Got shape \(28, 28\)"):
        extract_features("pixels", np.zeros((28, 28), dtype=np.uint8))
    with pytest.raises(ShapeError, match="with C = 1 or 3"):
        sobel_magnitude(torch.zeros(1, 2, 28, 28, dtype=torch.uint8))
    with pytest.raises(ShapeError, match=r"at least 8x8 pixels\. Got 6x6"):
        hog_features(np.zeros((1, 1, 6, 6), dtype=np.uint8))
    with pytest.raises(ValueError, match="'chunk_size' parameter of extract_features"):
        extract_features("pixels", np.zeros((1, 1, 8, 8), dtype=np.uint8), chunk_size=0)
    with pytest.raises(RegistryError, match="unknown feature 'hogg'; did you mean 'hog'"):
        extract_features("hogg", np.zeros((1, 1, 8, 8), dtype=np.uint8))


def test_deskew_straightens_a_slanted_bar_and_keeps_an_upright_one():
    from cnnlab.baselines.features import deskew

    slanted = np.zeros((1, 1, 28, 28), dtype=np.uint8)
    upright = np.zeros((1, 1, 28, 28), dtype=np.uint8)
    for y in range(4, 24):
        x = 14 + (y - 14) // 2  # leans right going down: one column per two rows
        slanted[0, 0, y, x - 1:x + 2] = 255
        upright[0, 0, y, 13:16] = 255

    def column_spread(img: np.ndarray) -> float:
        rows = img[0, 0].astype(float)
        centres = [(r * np.arange(28)).sum() / r.sum() for r in rows if r.sum() > 0]
        return float(np.ptp(centres))

    assert column_spread(slanted) >= 9
    assert column_spread(deskew(slanted)) <= 1.5
    assert np.array_equal(deskew(upright), upright)
    blank = np.zeros((2, 1, 28, 28), dtype=np.uint8)
    assert np.array_equal(deskew(blank), blank)
