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


def test_occlusion_inverts_a_band_or_its_outside_or_erases_an_edge():
    aug = _augment(p=1.0, affine=AugmentConfig())
    pixels = torch.full((64, 1, 28, 28), 0.25)
    PX = 1 / 28 + 1e-6  # bands are whole pixels
    for u, kind in ((0.1, "band"), (0.45, "outside"), (0.8, "edge")):
        out = aug._occlusion(pixels, torch.full((64,), u), torch.Generator().manual_seed(0))
        changed = (out - pixels).abs() > 1e-6  # (B, 1, H, W)
        share = changed.flatten(1).float().mean(1)
        if kind == "edge":
            assert torch.allclose(out[changed], torch.zeros(())), kind  # erased to paper
            assert ((share >= 0.1 - PX) & (share <= 0.35 + PX)).all(), kind  # 10-35 %
        else:
            assert torch.allclose(out[changed], torch.full((), 0.75)), kind  # 1 - 0.25
            band = share if kind == "band" else 1 - share
            assert ((band >= 0.2 - PX) & (band <= 0.6 + PX)).all(), kind  # 20-60 %
        # whole rows or whole columns, never a patch
        m = changed[:, 0]
        whole = (m.all(1) | ~m.any(1)).all(1) | (m.all(2) | ~m.any(2)).all(1)
        assert whole.all(), kind


def test_occlusion_can_be_switched_off():
    x = _batch()
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    on = _augment(p=1.0, affine=AugmentConfig())
    off = RobustAugment(BatchAugment(AugmentConfig(), MEAN, STD),
                        RobustAugmentConfig(p=1.0, occlusion=False))
    assert not torch.allclose(on(x, generator=gen()), off(x, generator=gen()))


def test_left_right_erasing_cuts_only_the_sides_with_the_same_draws():
    pixels = torch.full((256, 1, 28, 28), 0.25)
    u = torch.full((256,), 0.8)  # the erased-edge kind for every sample
    outs = {}
    for edges in ("all", "left-right"):
        aug = RobustAugment(BatchAugment(AugmentConfig(), MEAN, STD),
                            RobustAugmentConfig(p=1.0, erase_edges=edges))
        outs[edges] = aug._occlusion(pixels, u, torch.Generator().manual_seed(0))
    erased = {k: (v == 0)[:, 0] for k, v in outs.items()}  # (B, H, W)
    # all four edges: some samples lose rows (top or bottom), some columns
    rows_cut = erased["all"].all(2).any(1)
    assert rows_cut.any() and not rows_cut.all()
    # left-right: only whole columns, at the left or right edge, never a row
    assert not erased["left-right"].all(2).any()
    cols = erased["left-right"].all(1)  # (B, W)
    assert cols.any(1).all()
    assert (cols[:, 0] | cols[:, -1]).all()
    # the same depth as "all" draws for the samples that cut columns there
    same = ~rows_cut
    assert torch.equal(erased["all"][same], erased["left-right"][same])
    # the shares are the same for every sample: the depth draws did not move
    assert torch.equal(erased["all"].flatten(1).sum(1), erased["left-right"].flatten(1).sum(1))
    with pytest.raises(ConfigError, match="'erase_edges' parameter"):
        RobustAugmentConfig(erase_edges="top")


def test_thin_outlines_are_hollow_rings_outside_the_strokes():
    pixels = torch.zeros(4, 1, 28, 28)
    pixels[:, :, 8:20, 12:16] = 1.0  # a bar four pixels wide
    u = torch.full((4,), 0.9)  # the outline kind for every sample
    outs = {}
    for outline in ("band", "thin"):
        aug = RobustAugment(BatchAugment(AugmentConfig(), MEAN, STD),
                            RobustAugmentConfig(p=1.0, outline=outline))
        outs[outline] = aug._morphology(pixels, u, torch.Generator().manual_seed(0))
    inside = pixels.bool()
    ring = (torch.nn.functional.max_pool2d(pixels, 3, 1, 1) > 0) & ~inside
    far = outs["thin"][:, :, 10, 0:4]  # away from the bar the paper stays blank
    assert torch.equal(far, torch.zeros_like(far))
    # thin: the ring just outside the bar lights up, the bar's middle dims to 1 - amount
    assert (outs["thin"][ring] >= 0.5).all()
    assert (outs["thin"][:, :, 12, 12:16] <= 0.5).all()  # hollow: the bar's edge dims too
    # band: the bar's own edge pixels stay bright (dilation minus erosion covers them)
    assert (outs["band"][:, :, 12, 12] > 0.99).all()
    assert not torch.allclose(outs["band"], outs["thin"])
    with pytest.raises(ConfigError, match="'outline' parameter"):
        RobustAugmentConfig(outline="canny")


def test_outline_share_sets_how_many_of_the_morphology_samples_are_outlined():
    pixels = torch.zeros(200, 1, 28, 28)
    pixels[:, :, 8:20, 12:16] = 1.0  # a bar four pixels wide
    u = torch.linspace(0, 0.999, 200)  # every kind of the family, evenly
    gen = torch.Generator().manual_seed(0)

    def outlined(share: float) -> int:
        aug = RobustAugment(BatchAugment(AugmentConfig(), MEAN, STD),
                            RobustAugmentConfig(p=1.0, outline="thin", outline_share=share))
        out = aug._morphology(pixels, u, gen)
        return int((out[:, 0, 14, 13] <= 0.5).sum())  # a hollow middle: outlined

    assert outlined(0.2) == 40
    assert outlined(0.6) == 120
    assert outlined(0.0) == 0
    # the default draws as before the share could be set: thicker below 0.4, thinner below 0.8
    default = RobustAugment(BatchAugment(AugmentConfig(), MEAN, STD),
                            RobustAugmentConfig(p=1.0))
    thick = default._morphology(pixels, torch.full((1,), 0.39).expand(200), gen)
    assert (thick[:, 0, 14, 11] > 0).all()  # dilated: ink left of the bar
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="'outline_share' parameter"):
            RobustAugmentConfig(outline_share=bad)


def _one_and_seven() -> tuple[torch.Tensor, torch.Tensor]:
    """Four 1s (a vertical bar), four 7s (a top bar and a stem) and four 0s (a ring)."""
    pixels = torch.zeros(12, 1, 28, 28)
    pixels[0:4, :, 4:24, 13:16] = 1.0
    pixels[4:8, :, 4:7, 8:20] = 1.0
    pixels[4:8, :, 4:24, 17:20] = 1.0
    pixels[8:12, :, 4:24, 8:20] = 1.0
    pixels[8:12, :, 7:21, 11:17] = 0.0
    return pixels, torch.tensor([1] * 4 + [7] * 4 + [0] * 4)


def test_styles_flag_and_foot_the_ones_cross_the_sevens_and_leave_the_rest():
    pixels, labels = _one_and_seven()
    aug = RobustAugment(BatchAugment(AugmentConfig(), MEAN, STD),
                        RobustAugmentConfig(p=1.0, style_classes=(1, 7)))
    u = torch.tensor([0.2, 0.2, 0.8, 0.8] * 3)  # flag only for two 1s, flag and foot for two
    out = aug._styles(pixels, u, torch.Generator().manual_seed(0), labels == 1, labels == 7)
    assert out.shape == pixels.shape and out.max() <= 1 and out.min() >= 0
    added = out - pixels
    # the flag: ink left of the 1's stem in its upper part
    assert (added[0:4, 0, 4:13, :13].amax((1, 2)) > 0.5).all()
    # the foot: ink left and right of the stem on the bottom row, only where u >= 0.5
    assert (added[2:4, 0, 21:24, 16:].amax((1, 2)) > 0.5).all()
    assert (added[0:2, 0, 21:24, 16:] == 0).all()
    # the bar across the 7's stem: ink left and right of it at mid-height
    assert (added[4:8, 0, 10:18, :17].amax((1, 2)) > 0.5).all()
    assert (added[4:8, 0, 10:18, 20:].amax((1, 2)) > 0.5).all()
    assert torch.equal(out[8:], pixels[8:])  # other digits are untouched
    with pytest.raises(ConfigError, match="'style_classes' parameter"):
        RobustAugmentConfig(style_classes=(1, 1))


def test_styles_need_the_labels_and_leave_the_other_draws_alone_without_them():
    x, _ = _one_and_seven()
    x = (x - MEAN) / STD
    plain = RobustAugment(BatchAugment(AugmentConfig.digits(), MEAN, STD), RobustAugmentConfig())
    styled = RobustAugment(BatchAugment(AugmentConfig.digits(), MEAN, STD),
                           RobustAugmentConfig(style_classes=(1, 7)))
    a = plain(x, generator=torch.Generator().manual_seed(5))
    b = styled(x, generator=torch.Generator().manual_seed(5))  # no targets: no styles
    assert torch.equal(a, b)
    with pytest.raises(ShapeError, match="targets of shape"):
        styled(x, targets=torch.zeros(3, dtype=torch.long))


def test_style_scale_sets_the_share_of_the_ones_and_sevens_given_a_style():
    x, labels = _one_and_seven()
    x = ((x - MEAN) / STD).repeat(25, 1, 1, 1)  # 100 ones, 100 sevens, 100 zeros
    labels = labels.repeat(25)
    unstyled = torch.zeros_like(labels)  # as zeros, the styles family leaves every digit alone

    def styled(scale: float) -> int:
        aug = RobustAugment(BatchAugment(AugmentConfig.digits(), MEAN, STD),
                            RobustAugmentConfig(p=1.0, style_classes=(1, 7), style_scale=scale))
        a = aug(x, generator=torch.Generator().manual_seed(3), targets=labels)
        b = aug(x, generator=torch.Generator().manual_seed(3), targets=unstyled)
        return int((a != b).flatten(1).any(1).sum())  # the same draws but for the styles

    assert styled(0.0) == 0
    assert styled(1.0) == 200  # p = 1: every 1 and 7
    assert 70 <= styled(0.5) <= 130
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="'style_scale' parameter"):
            RobustAugmentConfig(style_scale=bad)


def test_crop_cuts_one_side_and_refits_the_rest_into_20_pixels_centred():
    pixels = torch.zeros(8, 1, 28, 28)
    pixels[:, :, 4:24, 9:19] = 1.0  # a 20x10 block in MNIST's place
    pixels[:, :, 4:8, 9:19] = 0.6  # a dimmer top, so cutting it shows
    aug = RobustAugment(BatchAugment(AugmentConfig(), MEAN, STD), RobustAugmentConfig(crop=True))
    u = torch.tensor([0.1, 0.1, 0.3, 0.3, 0.6, 0.6, 0.9, 0.9])  # each of the four sides
    out = aug._crop(pixels, u, torch.Generator().manual_seed(0))
    assert out.shape == pixels.shape and not torch.equal(out, pixels)
    ys = torch.arange(28.0).view(1, 28, 1)
    xs = torch.arange(28.0).view(1, 1, 28)
    ink = out[:, 0]
    mass = ink.sum((1, 2))
    cy, cx = (ink * ys).sum((1, 2)) / mass, (ink * xs).sum((1, 2)) / mass
    assert ((cy - 13.5).abs() < 1.0).all() and ((cx - 13.5).abs() < 1.0).all()
    rows = (ink > 0.3).any(2)
    tall = rows.sum(1)
    assert ((tall >= 19) & (tall <= 22)).all()  # the longer side fitted to 20 again
    # cutting the top loses the dim rows: the top of the refitted digit is bright
    top = rows.to(torch.uint8).argmax(1)
    assert out[0, 0, top[0] + 1, 14] > 0.9 and out[2, 0, top[2] + 1, 14] < 0.8
