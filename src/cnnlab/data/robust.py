"""Robust training augmentation: the random affine, then noise, blur, morphology and strokes.

``--augment robust`` (``data.augment.kind = "robust"``). A batch first gets the random affine
of :class:`~cnnlab.data.transforms.BatchAugment` (rotation, scale, shear, shift), then, in
[0, 1] pixel space, four families of damage, each on its own random share of the samples:

- morphology: thicker strokes (a 3x3 dilation), thinner strokes (an erosion) or outlines only
  (dilation minus erosion, or with ``outline="thin"`` the one-pixel ring just outside the
  strokes, hollow like an edge detector's), blended in by a random amount;
- blur: a Gaussian with its own random width along x and along y (round and directional
  blur alike);
- stray strokes: one line across the image, solid or dotted, of random position, angle,
  width and brightness;
- noise: Gaussian, salt-and-pepper, or a smooth bright haze (a coarse random field upsampled);
- occlusion (``occlusion``, on by default): part of the image inverted (a band of rows or
  columns, or everything outside such a band: dark margins and polarity flips of scans) or a
  band at one edge erased (a digit partly cut off by the page's edge);
- digit styles (``styles``, off by default; needs the labels and the classes of the digits 1
  and 7): a flag at the top of a 1 (a short stroke slanting down to the left) with or without
  a foot (a bar under it), and a bar across the stem of a 7, the European styles MNIST rarely
  shows, of random length, angle and width;
- cropped digits (``crop``, off by default): a random share of the digit cut off on one side,
  and what is left fitted into 20x20 and centred by centre of mass, as reading a page does with
  a digit the page's edge cut (:func:`cnnlab.data.to_mnist_form`).

The families and ranges are ours, drawn per sample from continuous ranges; none reuses the
test-time corruptions' exact parameters (MNIST-C's severities, kernels or seeds), so a
robustness benchmark measures generalisation, not memorised corruptions. Everything runs on
whole batches on the training device (a few batched matrix products and pooling calls, small
next to the model's own step), seeded by the generator the training loop passes in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnlab.data.transforms import BatchAugment, _check, _per_channel
from cnnlab.errors import ShapeError

# one family of the augmentation: (pixels on [0, 1], one uniform per sample, generator) -> pixels
_Step = Callable[[torch.Tensor, torch.Tensor, "torch.Generator | None"], torch.Tensor]

__all__ = ["ERASE_EDGES", "OUTLINES", "RobustAugment", "RobustAugmentConfig"]

ERASE_EDGES = ("all", "left-right")
OUTLINES = ("band", "thin")


@dataclass(frozen=True)
class RobustAugmentConfig:
    """How often and how strongly each family of damage is applied.

    Raises:
        ConfigError: from the constructor, for out-of-range values.
    """

    p: float = 0.5  # share of the samples each family is applied to, drawn independently
    # noise strengths are drawn from [0.2, 1] x the maximum:
    noise_std: float = 0.3  # Gaussian noise: the maximum std on the [0, 1] scale
    salt_pepper: float = 0.1  # salt-and-pepper: the maximum share of pixels
    haze: float = 0.6  # smooth haze: the maximum peak brightness
    blur_sigma: float = 1.5  # blur: sigma along each axis drawn from [0.3, blur_sigma] pixels
    stroke_width: float = 2.0  # stray strokes: half-width drawn from [0.5, stroke_width] pixels
    occlusion: bool = True  # the fifth family: inverted bands and erased edges
    # which edges the occlusion family erases: "all" four, or "left-right" only (the cropped-
    # page shift cuts a side); left-right did not read flagged 1s better on validation
    # (benchmarks/bench_robust_training.py --stages erase-search), so "all" stays
    erase_edges: str = "all"
    # the morphology family's outlines: "band" (dilation minus erosion: a band over the whole
    # stroke) or "thin" (dilation minus the image, doubled: a hollow ring one pixel wide)
    outline: str = "band"
    # the morphology family's share of outlines; thicker and thinner strokes split the rest
    # (0.2: the share before it could be set, chosen again in bench_robust_training.py's
    # edge-search)
    outline_share: float = 0.2
    # the sixth family: European digit styles on the 1s and 7s (flag, foot, crossed stem); the
    # class indices of the digits 1 and 7 (None: the family is off)
    style_classes: tuple[int, int] | None = None
    # the share of the 1s and 7s the styles family changes, as a multiple of ``p`` (1: the
    # share of every family; chosen in bench_robust_training.py's writer-search)
    style_scale: float = 1.0
    crop: bool = False  # the seventh family: part of the digit cut off, the rest re-fitted

    def __post_init__(self) -> None:
        for name in ("p", "noise_std", "salt_pepper", "haze", "outline_share", "style_scale"):
            v = getattr(self, name)
            _check(name, v, isinstance(v, int | float) and math.isfinite(v) and 0 <= v <= 1,
                   "a number in [0, 1]")
        _check("erase_edges", self.erase_edges, self.erase_edges in ERASE_EDGES,
               " or ".join(repr(e) for e in ERASE_EDGES))
        _check("outline", self.outline, self.outline in OUTLINES,
               " or ".join(repr(o) for o in OUTLINES))
        sc = self.style_classes
        _check("style_classes", sc, sc is None or (
            isinstance(sc, tuple) and len(sc) == 2 and len(set(sc)) == 2
            and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in sc)),
            "None or two different class indices (of the digits 1 and 7)")
        for name, low in (("blur_sigma", 0.3), ("stroke_width", 0.5)):
            v = getattr(self, name)
            _check(name, v, isinstance(v, int | float) and math.isfinite(v) and low <= v <= 10,
                   f"a number of pixels in [{low}, 10]")


class RobustAugment:
    """The affine of ``affine`` (a :class:`BatchAugment`, which also carries the batches'
    normalisation), then the damage of ``config``, on a normalised float batch ``(B, C, H, W)``.

    Called as :class:`BatchAugment` is: ``augment(x, generator=gen)``; with a generator the
    result is deterministic. Returns a new tensor of the same shape and dtype.
    """

    def __init__(self, affine: BatchAugment, config: RobustAugmentConfig | None = None) -> None:
        self.affine = affine
        self.config = config or RobustAugmentConfig()

    def __repr__(self) -> str:
        return f"RobustAugment({self.affine!r}, {self.config!r})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None,
                 targets: torch.Tensor | None = None) -> torch.Tensor:
        """Augment a batch; ``targets`` (its ``(B,)`` class indices) is needed by the styles
        family only, which without it leaves the batch as it is.

        Raises:
            ShapeError: ``x`` is not a floating-point ``(B, C, H, W)`` tensor, its channels
                do not match the normalisation, or ``targets`` is not ``(B,)``.
        """
        if x.ndim != 4 or not x.is_floating_point():
            raise ShapeError(
                f"RobustAugment expects a float tensor (B, C, H, W), got {x.dtype} of shape "
                f"{tuple(x.shape)}"
            )
        if targets is not None and tuple(targets.shape) != (x.shape[0],):
            raise ShapeError(f"RobustAugment expects targets of shape ({x.shape[0]},), got "
                             f"{tuple(targets.shape)}")
        x = self.affine(x, generator=generator)
        b, c = x.shape[:2]
        if b == 0:
            return x
        mean = _per_channel(self.affine.mean, c, "mean").to(x.device, x.dtype)
        std = _per_channel(self.affine.std, c, "std").to(x.device, x.dtype)
        pixels = (x * std + mean).clamp(0, 1)  # (B, C, H, W) on [0, 1]
        # which samples each family hits, and one uniform per sample for its choices
        steps: list[_Step] = [self._morphology, self._blur, self._strokes, self._noise]
        if self.config.occlusion:
            steps.append(self._occlusion)
        # the styles and the crop come first (a scan of a flagged 1 or a cut digit is then
        # blurred, noisy, ...), their draws after the others', so that without them the draws
        # are those of the earlier families alone: a run trained before a family existed is
        # reproduced exactly with it off (and without occlusion, by the four-family version)
        first: list[_Step] = []
        first_share: list[float] = []  # the share of the samples each of them hits
        if self.config.style_classes is not None and targets is not None:
            one, seven = self.config.style_classes
            first.append(lambda px, v, g: self._styles(px, v, g, targets == one,
                                                       targets == seven))
            first_share.append(self.config.p * self.config.style_scale)
        if self.config.crop:
            first.append(self._crop)
            first_share.append(self.config.p)
        n_late = len(steps)
        share = first_share + [self.config.p] * n_late  # in the order of the steps
        steps = first + steps
        n = len(steps)
        u = torch.rand(b, 2 * n_late, generator=generator, device=x.device, dtype=x.dtype)
        if n > n_late:  # (B, 2n): the earlier families' hits, then the new ones', and so on
            extra = torch.rand(b, 2 * (n - n_late), generator=generator, device=x.device,
                               dtype=x.dtype)
            k = n - n_late
            u = torch.cat([extra[:, :k], u[:, :n_late], extra[:, k:], u[:, n_late:]], dim=1)
        # (B, n): [styles], [crop], morphology, blur, strokes, noise, [occlusion]
        hit = u[:, :n] < torch.tensor(share, device=x.device, dtype=x.dtype)
        for k, step in enumerate(steps):
            if bool(hit[:, k].any()):
                changed = step(pixels, u[:, n + k], generator)
                pixels = torch.where(hit[:, k].view(b, 1, 1, 1), changed, pixels)
        return (pixels.clamp(0, 1) - mean) / std

    def _morphology(self, x: torch.Tensor, u: torch.Tensor,
                    generator: torch.Generator | None) -> torch.Tensor:
        """Thicker, thinner or outlined strokes (a share ``outline_share`` of the samples
        outlined, the rest split evenly: u < 0.4, < 0.8 and the rest at the default 0.2),
        blended in by a random amount in [0.5, 1]."""
        b = x.shape[0]
        dilated = F.max_pool2d(x, 3, stride=1, padding=1)
        eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
        if self.config.outline == "thin":  # the ring outside the strokes, near-binary
            outline = (2 * (dilated - x)).clamp(0, 1)
        else:
            outline = (dilated - eroded).clamp(0, 1)
        kind = u.view(b, 1, 1, 1)
        strokes = 1 - self.config.outline_share
        target = torch.where(kind < strokes / 2, dilated,
                             torch.where(kind < strokes, eroded, outline))
        amount = 0.5 + 0.5 * torch.rand(b, 1, 1, 1, generator=generator, device=x.device,
                                        dtype=x.dtype)
        return x + amount * (target - x)

    def _blur(self, x: torch.Tensor, u: torch.Tensor,
              generator: torch.Generator | None) -> torch.Tensor:
        """A Gaussian blur with its own sigma along y and x per sample: two batched matrix
        products (far faster than a per-sample conv2d on the CPU)."""
        b, _, h, w = x.shape
        lo, hi = 0.3, self.config.blur_sigma
        sigmas = lo + (hi - lo) * torch.rand(b, 2, generator=generator, device=x.device,
                                             dtype=x.dtype)
        blur_h = _gaussian_matrices(h, sigmas[:, 0])  # (B, H, H)
        blur_w = _gaussian_matrices(w, sigmas[:, 1])  # (B, W, W)
        return blur_h.unsqueeze(1) @ x @ blur_w.transpose(1, 2).unsqueeze(1)  # (B, C, H, W)

    def _strokes(self, x: torch.Tensor, u: torch.Tensor,
                 generator: torch.Generator | None) -> torch.Tensor:
        """One stray line per sample: through a random point at a random angle, of random
        half-width and brightness; dotted when u >= 0.5."""
        b, _, h, w = x.shape
        r = torch.rand(b, 5, generator=generator, device=x.device, dtype=x.dtype)
        ys = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1)
        xs = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w)
        px, py = (r[:, 0] * w).view(b, 1, 1), (r[:, 1] * h).view(b, 1, 1)
        angle = (r[:, 2] * math.pi).view(b, 1, 1)
        across = (xs - px) * torch.sin(angle) - (ys - py) * torch.cos(angle)  # (B, H, W)
        along = (xs - px) * torch.cos(angle) + (ys - py) * torch.sin(angle)
        half = (0.5 + (self.config.stroke_width - 0.5) * r[:, 3]).view(b, 1, 1)
        line = (half + 0.5 - across.abs()).clamp(0, 1)  # anti-aliased edge
        dotted = (u >= 0.5).view(b, 1, 1)
        line = torch.where(dotted, line * (torch.cos(along * 1.3) > 0).to(x.dtype), line)
        level = (0.5 + 0.5 * r[:, 4]).view(b, 1, 1, 1)
        return torch.maximum(x, line.unsqueeze(1) * level)

    def _noise(self, x: torch.Tensor, u: torch.Tensor,
               generator: torch.Generator | None) -> torch.Tensor:
        """Gaussian noise (u < 0.4), salt and pepper (< 0.7) or a smooth haze (the rest)."""
        b, _, h, w = x.shape
        cfg = self.config
        strength = 0.2 + 0.8 * torch.rand(b, 1, 1, 1, generator=generator, device=x.device,
                                          dtype=x.dtype)  # a fifth to all of the maximum
        gauss = x + cfg.noise_std * strength * torch.randn(
            x.shape, generator=generator, device=x.device, dtype=x.dtype)
        draw = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        share = cfg.salt_pepper * strength
        salt = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) < 0.5
        peppered = torch.where(draw < share, salt.to(x.dtype), x)
        coarse = torch.rand(b, 1, 4, 4, generator=generator, device=x.device, dtype=x.dtype)
        field = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
        hazy = x + cfg.haze * strength * field * (1 - x)
        kind = u.view(b, 1, 1, 1)
        return torch.where(kind < 0.4, gauss, torch.where(kind < 0.7, peppered, hazy))

    def _occlusion(self, x: torch.Tensor, u: torch.Tensor,
                   generator: torch.Generator | None) -> torch.Tensor:
        """Inverted inside a random band (u < 0.3) or outside it (< 0.6), along rows or
        columns, the band 20-60 % of the side; else one edge (a random side) erased over 10-35 %
        of the side (a random one of the four, or of left and right with
        ``erase_edges="left-right"``: the same random numbers either way)."""
        b, _, h, w = x.shape
        r = torch.rand(b, 4, generator=generator, device=x.device, dtype=x.dtype)
        along_rows = (r[:, 0] < 0.5).view(b, 1, 1, 1)
        rows = torch.arange(h, dtype=x.dtype, device=x.device).view(1, 1, h, 1) / h
        cols = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, 1, w) / w
        pos = torch.where(along_rows, rows, cols)  # (B, 1, H, W): 0 to 1 across the bands
        width = (0.2 + 0.4 * r[:, 1]).view(b, 1, 1, 1)
        start = (r[:, 2].view(b, 1, 1, 1) * (1 - width))
        inside = (pos >= start) & (pos < start + width)
        kind = u.view(b, 1, 1, 1)
        invert = torch.where(kind < 0.3, inside, ~inside)
        inverted = torch.where(invert, 1 - x, x)
        depth = (0.1 + 0.25 * r[:, 3]).view(b, 1, 1, 1)
        from_end = ((kind - 0.6) / 0.4) >= 0.5  # which end of the axis (rows or columns) is cut
        if self.config.erase_edges == "left-right":
            pos = cols.expand_as(pos)
        cut = torch.where(from_end, pos >= 1 - depth, pos < depth)
        erased = torch.where(cut, torch.zeros_like(x), x)
        return torch.where(kind < 0.6, inverted, erased)


    def _styles(self, x: torch.Tensor, u: torch.Tensor, generator: torch.Generator | None,
                is_one: torch.Tensor, is_seven: torch.Tensor) -> torch.Tensor:
        """On the 1s a flag from the top of the stroke, slanting down to the left (u < 0.5),
        or a flag and a foot (the rest); on the 7s a bar across the stem, slightly tilted;
        other digits unchanged. Lengths are shares of the digit's height, so they follow its
        size after the affine."""
        b, _, h, w = x.shape
        ink = x.mean(1)  # (B, H, W)
        top, bottom, _, _, has_ink = _bbox(ink)
        height = (bottom - top + 1).to(x.dtype)
        r = torch.rand(b, 8, generator=generator, device=x.device, dtype=x.dtype)
        half_width = 0.6 + 0.9 * r[:, 7]
        level = ink.amax(dim=(1, 2))
        tip = _column_at(ink, top, top + 2)
        base = _column_at(ink, bottom - 2, bottom)
        # the flag: 15-50 % of the height long, 15-60 degrees below the horizontal
        length = (0.15 + 0.35 * r[:, 0]) * height
        angle = torch.deg2rad(15 + 45 * r[:, 1])
        y0 = top.to(x.dtype) + 0.5
        flag = _segment(tip, y0, tip - length * torch.cos(angle), y0 + length * torch.sin(angle),
                        half_width, h, w)
        # the foot: a bar under the 1, each side 12-42 % of the height, off-centre by a little
        foot_half = (0.12 + 0.3 * r[:, 2]) * height
        centre = base + (r[:, 3] - 0.5) * 0.4 * foot_half
        y1 = bottom.to(x.dtype) - 0.5
        foot = _segment(centre - foot_half, y1, centre + foot_half, y1, half_width, h, w)
        with_foot = (u >= 0.5).view(b, 1, 1)
        one = torch.maximum(flag, torch.where(with_foot, foot, torch.zeros_like(foot)))
        # the bar across a 7's stem: at 40-60 % of the height, 15-45 % of it each side, +-10 deg
        row = top.to(x.dtype) + (0.4 + 0.2 * r[:, 6]) * height
        stem = _column_at(ink, row.floor().long() - 1, row.floor().long() + 1)
        bar_half = (0.15 + 0.3 * r[:, 4]) * height
        tilt = (r[:, 5] - 0.5) * 0.35
        dx, dy = bar_half * torch.cos(tilt), bar_half * torch.sin(tilt)
        bar = _segment(stem - dx, row - dy, stem + dx, row + dy, half_width, h, w)
        stroke = torch.where(is_one.view(b, 1, 1), one,
                             torch.where(is_seven.view(b, 1, 1), bar, torch.zeros_like(bar)))
        stroke = stroke * (level * has_ink.to(x.dtype)).view(b, 1, 1)
        return torch.maximum(x, stroke.unsqueeze(1))

    def _crop(self, x: torch.Tensor, u: torch.Tensor,
              generator: torch.Generator | None) -> torch.Tensor:
        """5-35 % of the digit's height or width cut off on one side (u picks which of the
        four), and what is left fitted into 20x20 (of 28x28) keeping its aspect ratio and
        centred by centre of mass: what reading a page does with a digit cut by its edge."""
        b, _, h, w = x.shape
        ink = x.mean(1)
        top, bottom, left, right, has_ink = _bbox(ink)
        share = 0.05 + 0.3 * torch.rand(b, generator=generator, device=x.device, dtype=x.dtype)
        side = (u * 4).floor().clamp(max=3).view(b, 1, 1)
        ys = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
        xs = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
        tall = (bottom - top + 1).to(x.dtype)
        wide = (right - left + 1).to(x.dtype)
        keep = torch.where(side == 0, ys >= (top + share * tall).view(b, 1, 1),
               torch.where(side == 1, ys <= (bottom - share * tall).view(b, 1, 1),
               torch.where(side == 2, xs >= (left + share * wide).view(b, 1, 1),
                           xs <= (right - share * wide).view(b, 1, 1))))
        cut = x * keep.unsqueeze(1).to(x.dtype)
        left_ink = cut.mean(1)
        top, bottom, left, right, has_left = _bbox(left_ink)
        mass = left_ink.sum(dim=(1, 2)).clamp_min(1e-6)
        cy = (left_ink * ys).sum(dim=(1, 2)) / mass
        cx = (left_ink * xs).sum(dim=(1, 2)) / mass
        box = 20 / 28 * min(h, w)
        extent = torch.maximum(bottom - top + 1, right - left + 1).to(x.dtype)
        scale = (box / extent).clamp(0.5, 3.0)
        theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
        theta[:, 0, 2] = (cx + 0.5) * 2 / w - 1
        theta[:, 1, 2] = (cy + 0.5) * 2 / h - 1
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        fitted = F.grid_sample(cut, grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False)
        ok = (has_ink & has_left).view(b, 1, 1, 1)
        return torch.where(ok, fitted, x)


INK = 0.3  # the share of full brightness above which a pixel counts as ink (styles, crop)


def _bbox(ink: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(top, bottom, left, right, has_ink)`` of the ink of a ``(B, H, W)`` batch, inclusive
    pixel indices (0 where a sample has no ink)."""
    mask = ink > INK
    rows, cols = mask.any(2), mask.any(1)  # (B, H), (B, W)
    h, w = rows.shape[1], cols.shape[1]
    top = rows.to(torch.uint8).argmax(1)
    bottom = h - 1 - rows.flip(1).to(torch.uint8).argmax(1)
    left = cols.to(torch.uint8).argmax(1)
    right = w - 1 - cols.flip(1).to(torch.uint8).argmax(1)
    return top, bottom, left, right, rows.any(1)


def _column_at(ink: torch.Tensor, r0: torch.Tensor, r1: torch.Tensor) -> torch.Tensor:
    """The ink-weighted mean column of rows ``r0`` to ``r1`` (inclusive, per sample) of a
    ``(B, H, W)`` batch; the middle column where those rows hold no ink."""
    b, h, w = ink.shape
    ys = torch.arange(h, device=ink.device).view(1, h, 1)
    xs = torch.arange(w, device=ink.device, dtype=ink.dtype).view(1, 1, w)
    rows = (ys >= r0.view(b, 1, 1)) & (ys <= r1.view(b, 1, 1))
    weight = ink * rows.to(ink.dtype)
    total = weight.sum(dim=(1, 2))
    mean = (weight * xs).sum(dim=(1, 2)) / total.clamp_min(1e-6)
    return torch.where(total > 0, mean, torch.full_like(mean, (w - 1) / 2))


def _segment(ax: torch.Tensor, ay: torch.Tensor, bx: torch.Tensor, by: torch.Tensor,
             half: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(B, H, W)`` coverage of one anti-aliased line segment per sample, from ``(ax, ay)`` to
    ``(bx, by)`` (pixel coordinates, ``(B,)`` each) with half-width ``half``."""
    b = ax.shape[0]
    ys = torch.arange(h, device=ax.device, dtype=ax.dtype).view(1, h, 1)
    xs = torch.arange(w, device=ax.device, dtype=ax.dtype).view(1, 1, w)
    ax, ay, bx, by = (v.view(b, 1, 1) for v in (ax, ay, bx, by))
    dx, dy = bx - ax, by - ay
    t = (((xs - ax) * dx + (ys - ay) * dy) / (dx * dx + dy * dy).clamp_min(1e-6)).clamp(0, 1)
    dist = torch.hypot(xs - (ax + t * dx), ys - (ay + t * dy))
    return (half.view(b, 1, 1) + 0.5 - dist).clamp(0, 1)


def _gaussian_matrices(n: int, sigmas: torch.Tensor) -> torch.Tensor:
    """``(B, n, n)`` matrices whose product blurs along one axis, one sigma per sample; each
    row sums to one over the pixels inside the image (the border does not darken)."""
    i = torch.arange(n, dtype=sigmas.dtype, device=sigmas.device)
    d = i.view(1, -1, 1) - i.view(1, 1, -1)  # (1, n, n)
    weights = torch.exp(-0.5 * (d / sigmas.view(-1, 1, 1)) ** 2)
    return weights / weights.sum(dim=2, keepdim=True)

