"""normalize, AugmentConfig validation and BatchAugment behaviour."""

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F

from cnnlab.data import AugmentConfig, BatchAugment, normalize
from cnnlab.data.transforms import _affine_grid
from cnnlab.errors import ConfigError, ShapeError

MEAN, STD = 0.1307, 0.3081
BLACK = -MEAN / STD  # a black pixel after normalisation


def _blob_batch(b: int = 64, size: int = 28) -> torch.Tensor:
    """Normalised images: a bright 6x6 square in the middle of a black field."""
    images = torch.zeros(b, 1, size, size, dtype=torch.uint8)
    images[:, :, size // 2 - 3 : size // 2 + 3, size // 2 - 3 : size // 2 + 3] = 255
    return normalize(images, MEAN, STD)


def _ink(x: torch.Tensor) -> torch.Tensor:
    """(B,) total brightness above black."""
    return (x[:, 0] - BLACK).clamp(min=0).sum((1, 2))


def _centre_of_mass(x: torch.Tensor) -> torch.Tensor:
    """(B, 2) row/column centre of mass of the ink (pixels above black)."""
    ink = (x[:, 0] - BLACK).clamp(min=0)
    rows = torch.arange(x.shape[2], dtype=x.dtype)
    cols = torch.arange(x.shape[3], dtype=x.dtype)
    mass = ink.sum((1, 2))
    return torch.stack([(ink.sum(2) * rows).sum(1) / mass, (ink.sum(1) * cols).sum(1) / mass], 1)


# ----------------------------------------------------------------------- normalize


def test_normalize_values():
    images = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2)
    x = normalize(images, MEAN, STD)
    assert x.dtype == torch.float32
    assert x.flatten().tolist() == pytest.approx([BLACK, (1 - MEAN) / STD], rel=1e-6)


def test_normalize_per_channel():
    images = torch.full((2, 3, 2, 2), 51, dtype=torch.uint8)  # 0.2 on [0, 1]
    x = normalize(images, (0.1, 0.2, 0.3), (0.5, 1.0, 0.1))
    assert x[:, :, 0, 0].tolist()[0] == pytest.approx([0.2, 0.0, -1.0], abs=1e-6)


def test_normalize_errors():
    with pytest.raises(ShapeError, match="expects uint8 images"):
        normalize(torch.zeros(1, 1, 2, 2), MEAN, STD)
    with pytest.raises(ShapeError, match="mean has 2 values but the images have 3 channels"):
        normalize(torch.zeros(1, 3, 2, 2, dtype=torch.uint8), (0.5, 0.5), 1.0)
    with pytest.raises(ConfigError, match="The 'std' parameter of normalize must be positive"):
        normalize(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), 0.5, 0.0)


# ------------------------------------------------------------------- AugmentConfig


def test_config_defaults_and_preset():
    assert AugmentConfig().is_identity
    digits = AugmentConfig.digits()
    assert (digits.rotation, digits.scale, digits.translate) == (10.0, (0.9, 1.1), 0.1)
    assert not (digits.hflip or digits.vflip or digits.brightness or digits.contrast)
    assert AugmentConfig(scale=[0.8, 1.2]).scale == (0.8, 1.2)  # lists from TOML
    with pytest.raises(dataclasses.FrozenInstanceError):
        digits.rotation = 5.0


@pytest.mark.parametrize(
    ("field", "value", "must"),
    [
        ("rotation", -1.0, "a number of degrees in [0, 180]"),
        ("rotation", float("nan"), "a number of degrees in [0, 180]"),
        ("scale", (1.2, 0.8), "a pair (low, high) with 0 < low <= high"),
        ("scale", (0.0, 1.0), "a pair (low, high) with 0 < low <= high"),
        ("translate", 1.0, "a fraction in [0, 1)"),
        ("shear", 90, "a number of degrees in [0, 90)"),
        ("elastic_alpha", -3, "a number of pixels >= 0 (0 = off)"),
        ("elastic_sigma", 0, "a number of pixels > 0"),
        ("hflip", 1, "True or False"),
        ("brightness", 1.5, "a number in [0, 1]"),
        ("contrast", -0.1, "a number in [0, 1)"),
    ],
)
def test_config_validation(field, value, must):
    message = f"The '{field}' parameter of AugmentConfig must be {must}. Got {value!r} instead."
    with pytest.raises(ConfigError, match=re.escape(message)):
        AugmentConfig(**{field: value})


# -------------------------------------------------------------------- BatchAugment


def test_identity_returns_input_unchanged():
    x = _blob_batch(4)
    assert BatchAugment(AugmentConfig(), MEAN, STD)(x) is x


def test_deterministic_given_generator_and_shape_dtype():
    x = _blob_batch(16)
    config = AugmentConfig(rotation=20, scale=(0.8, 1.2), translate=0.1, shear=10,
                           elastic_alpha=8, hflip=True, brightness=0.1, contrast=0.2)
    augment = BatchAugment(config, MEAN, STD)
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    c = augment(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # each sample gets its own parameters
    assert a.min() >= BLACK - 1e-5 and a.max() <= (1 - MEAN) / STD + 1e-5  # valid pixels
    d = BatchAugment(config, MEAN, STD)(x.double(), torch.Generator().manual_seed(3))
    assert d.dtype == torch.float64


def test_translate_moves_mass_and_fills_with_black():
    x = _blob_batch(64)
    y = BatchAugment(AugmentConfig(translate=0.2), MEAN, STD)(x, torch.Generator().manual_seed(0))
    shift = _centre_of_mass(y) - _centre_of_mass(x)
    assert (shift.abs().amax(1) > 0.5).float().mean() > 0.8  # most samples moved
    assert shift.abs().max() <= 0.2 * 28 + 1e-3  # by at most 20 % of the size
    torch.testing.assert_close(_ink(y), _ink(x), rtol=1e-4, atol=1e-3)  # blob stays inside
    corner = y[:, :, :3, :3]
    torch.testing.assert_close(corner, torch.full_like(corner, BLACK))  # filled with black


def test_geometry_on_an_all_black_batch_stays_black():
    x = normalize(torch.zeros(8, 3, 10, 14, dtype=torch.uint8), (0.5, 0.4, 0.3), (0.2, 0.3, 0.4))
    config = AugmentConfig(rotation=45, scale=(0.5, 1.5), translate=0.3, elastic_alpha=20)
    y = BatchAugment(config, (0.5, 0.4, 0.3), (0.2, 0.3, 0.4))(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(y, x)


def test_hflip_is_an_exact_mirror():
    x = torch.randn(32, 2, 5, 7)
    y = BatchAugment(AugmentConfig(hflip=True), 0.0, 1.0)(x, torch.Generator().manual_seed(0))
    pairs = list(zip(y, x, strict=True))
    flipped = torch.tensor([torch.allclose(a, b.flip(-1), atol=1e-5) for a, b in pairs])
    same = torch.tensor([torch.allclose(a, b, atol=1e-5) for a, b in pairs])
    assert (flipped | same).all() and flipped.any() and same.any()


def test_scale_enlarges_content():
    x = _blob_batch(4)
    y = BatchAugment(AugmentConfig(scale=(2.0, 2.0)), MEAN, STD)(x)
    torch.testing.assert_close(_ink(y), 4 * _ink(x), rtol=0.02, atol=0)


def test_brightness_and_contrast_only():
    x = _blob_batch(8)
    y = BatchAugment(AugmentConfig(brightness=0.2), MEAN, STD)(x, torch.Generator().manual_seed(1))
    delta = (y - x)[:, 0, 14, 14]  # the blob's centre was white: it can only get darker
    assert (delta <= 1e-6).all() and (delta < -1e-3).any()


def test_fast_grid_matches_affine_grid():
    theta = torch.randn(6, 2, 3, dtype=torch.float64)
    for h, w in [(28, 28), (7, 19), (1, 3)]:
        expected = F.affine_grid(theta, [6, 1, h, w], align_corners=False)
        torch.testing.assert_close(_affine_grid(theta, h, w), expected)


def test_rejects_bad_batches():
    augment = BatchAugment(AugmentConfig.digits(), MEAN, STD)
    with pytest.raises(ShapeError, match="expects a float tensor \\(B, C, H, W\\)"):
        augment(torch.zeros(2, 28, 28))
    with pytest.raises(ShapeError, match="expects a float tensor"):
        augment(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ShapeError, match="mean has 2 values but the images have 1 channels"):
        BatchAugment(AugmentConfig.digits(), (0.1, 0.2), 1.0)(torch.zeros(2, 1, 8, 8))
    assert augment(torch.zeros(0, 1, 28, 28)).shape == (0, 1, 28, 28)
    with pytest.raises(ConfigError, match="The 'std' parameter of BatchAugment must be positive"):
        BatchAugment(AugmentConfig.digits(), 0.5, (0.2, 0.0))
