"""--augment robust: the random affine, then noise, blur, morphology and stray strokes."""

import pytest
import torch

from cnnlab.data.robust import RobustAugment, RobustAugmentConfig
from cnnlab.data.transforms import AugmentConfig, BatchAugment, normalize
from cnnlab.errors import ConfigError, ShapeError
from synth import learnable_images

MEAN, STD = 0.13, 0.31


def _batch(channels: int = 1) -> torch.Tensor:
    images, _ = learnable_images(8, 4, channels=channels)
    return normalize(images, MEAN, STD)  # (32, C, 28, 28)


def _augment(p: float = 0.5, affine: AugmentConfig | None = None) -> RobustAugment:
    return RobustAugment(BatchAugment(affine or AugmentConfig.digits(), MEAN, STD),
                         RobustAugmentConfig(p=p))


def test_deterministic_for_a_seed_and_different_for_another():
    x = _batch()
    a = _augment()(x, generator=torch.Generator().manual_seed(3))
    b = _augment()(x, generator=torch.Generator().manual_seed(3))
    c = _augment()(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("channels", [1, 3])
def test_keeps_shape_dtype_and_the_pixel_range(channels):
    x = _batch(channels)
    y = _augment(p=1.0)(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    pixels = y * STD + MEAN
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert x.abs().sum() > 0 and torch.isfinite(y).all()


def test_each_family_changes_images_without_any_affine():
    x = _batch()
    aug = _augment(p=1.0, affine=AugmentConfig())  # the damage alone
    gen = torch.Generator().manual_seed(0)
    pixels = (x * STD + MEAN).clamp(0, 1)
    u = torch.full((len(x),), 0.1)  # first choice of each family
    for step in (aug._morphology, aug._blur, aug._strokes, aug._noise):
        changed = step(pixels, u, gen)
        assert changed.shape == pixels.shape
        per_image = (changed - pixels).abs().flatten(1).amax(1)
        assert (per_image > 0.05).all(), step.__name__
    y = aug(x, generator=gen)
    assert ((y - x).abs().flatten(1).amax(1) > 0.05).all()


def test_p_zero_leaves_only_the_affine():
    x = _batch()
    affine = BatchAugment(AugmentConfig.digits(), MEAN, STD)
    robust = RobustAugment(affine, RobustAugmentConfig(p=0.0))
    a = affine(x, generator=torch.Generator().manual_seed(1))
    b = robust(x, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(a.clamp(-MEAN / STD, (1 - MEAN) / STD), b, atol=1e-5)


def test_bad_input_and_settings_are_refused():
    with pytest.raises(ShapeError, match="float tensor"):
        _augment()(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="'p' parameter"):
        RobustAugmentConfig(p=1.5)
    with pytest.raises(ConfigError, match="'blur_sigma' parameter"):
        RobustAugmentConfig(blur_sigma=float("nan"))
