"""Normalisation and batched random augmentation on image tensors.

Augmentation runs on whole batches already on the training device: one random affine
matrix per sample, one sampling grid and one ``grid_sample`` call for the batch (flips and
the optional elastic field are folded into that same grid), then optional
brightness/contrast jitter. Inputs are normalised tensors, so the fill for pixels shifted in
from outside is the normalised value of a black pixel, ``-mean / std``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnlab.errors import ConfigError, ShapeError

__all__ = ["AugmentConfig", "BatchAugment", "normalize"]


def _per_channel(values: float | Sequence[float], channels: int, what: str) -> torch.Tensor:
    """``values`` (one or one per channel) as a float64 ``(C, 1, 1)`` tensor on the CPU.

    Kept on the host so that checking them never waits for a GPU.
    """
    t = torch.as_tensor(values, dtype=torch.float64, device="cpu").reshape(-1)
    if t.numel() not in (1, channels):
        raise ShapeError(
            f"{what} has {t.numel()} values but the images have {channels} channels; "
            "give one value, or one per channel"
        )
    return t.expand(channels).reshape(channels, 1, 1)


def _check_std(std: float | Sequence[float], caller: str) -> None:
    if not bool((torch.as_tensor(std, dtype=torch.float64, device="cpu") > 0).all()):
        raise ConfigError(
            f"The 'std' parameter of {caller} must be positive. Got {std!r} instead."
        )


def normalize(
    images: torch.Tensor, mean: float | Sequence[float], std: float | Sequence[float]
) -> torch.Tensor:
    """``(images / 255 - mean) / std`` per channel, as float32.

    Args:
        images: uint8 ``(..., C, H, W)``.
        mean, std: one value, or one per channel, for pixels on [0, 1].

    Raises:
        ShapeError: ``images`` is not uint8 with a channel axis, or mean/std lengths do not
            match the channels.
        ConfigError: a std value is not positive.
    """
    if images.dtype != torch.uint8 or images.ndim < 3:
        raise ShapeError(
            f"normalize expects uint8 images of shape (..., C, H, W), got {images.dtype} of "
            f"shape {tuple(images.shape)}"
        )
    channels = images.shape[-3]
    mean_h = _per_channel(mean, channels, "mean")
    std_h = _per_channel(std, channels, "std")
    _check_std(std, "normalize")
    x = images.to(torch.float32)
    # One multiply and one subtract instead of divide, subtract, divide.
    scale = (1.0 / (255.0 * std_h)).to(x.device, x.dtype)
    return x.mul_(scale).sub_((mean_h / std_h).to(x.device, x.dtype))


def _check(name: str, value: object, ok: bool, must: str) -> None:
    if not ok:
        raise ConfigError(
            f"The '{name}' parameter of AugmentConfig must be {must}. Got {value!r} instead."
        )


@dataclass(frozen=True)
class AugmentConfig:
    """Random augmentation settings; the defaults change nothing.

    Raises:
        ConfigError: from the constructor, for out-of-range values.
    """

    rotation: float = 0.0  # max rotation in degrees, drawn from [-rotation, rotation]
    scale: tuple[float, float] = (1.0, 1.0)  # zoom factor range; > 1 enlarges the content
    translate: float = 0.0  # max shift as a fraction of the width (x) and height (y)
    shear: float = 0.0  # max horizontal shear in degrees
    elastic_alpha: float = 0.0  # elastic distortion strength in pixels (Simard 2003: 34); 0 = off
    elastic_sigma: float = 4.0  # smoothness of the elastic field in pixels (Simard 2003: 4)
    hflip: bool = False  # mirror left-right with probability 1/2
    vflip: bool = False  # mirror top-bottom with probability 1/2
    brightness: float = 0.0  # max shift added to pixels on the [0, 1] scale
    contrast: float = 0.0  # max relative change: a factor in [1 - contrast, 1 + contrast]

    def __post_init__(self) -> None:
        def number(v: object) -> bool:
            return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)

        if isinstance(self.scale, list):  # TOML and JSON give lists
            object.__setattr__(self, "scale", tuple(self.scale))
        r, s, t, sh = self.rotation, self.scale, self.translate, self.shear
        _check("rotation", r, number(r) and 0 <= r <= 180, "a number of degrees in [0, 180]")
        _check(
            "scale",
            s,
            isinstance(s, tuple) and len(s) == 2 and all(map(number, s)) and 0 < s[0] <= s[1],
            "a pair (low, high) with 0 < low <= high",
        )
        _check("translate", t, number(t) and 0 <= t < 1, "a fraction in [0, 1)")
        _check("shear", sh, number(sh) and 0 <= sh < 90, "a number of degrees in [0, 90)")
        a, sg = self.elastic_alpha, self.elastic_sigma
        _check("elastic_alpha", a, number(a) and a >= 0, "a number of pixels >= 0 (0 = off)")
        _check("elastic_sigma", sg, number(sg) and sg > 0, "a number of pixels > 0")
        _check("hflip", self.hflip, isinstance(self.hflip, bool), "True or False")
        _check("vflip", self.vflip, isinstance(self.vflip, bool), "True or False")
        b, c = self.brightness, self.contrast
        _check("brightness", b, number(b) and 0 <= b <= 1, "a number in [0, 1]")
        _check("contrast", c, number(c) and 0 <= c < 1, "a number in [0, 1)")

    @classmethod
    def digits(cls) -> AugmentConfig:
        """Mild settings for MNIST-like digits: no flips (a mirrored 2 is not a 2), no colour."""
        return cls(rotation=10.0, scale=(0.9, 1.1), translate=0.1)

    @property
    def geometric(self) -> bool:
        """Whether any setting moves pixels."""
        return bool(
            self.rotation or self.scale != (1.0, 1.0) or self.translate or self.shear
            or self.elastic_alpha or self.hflip or self.vflip
        )

    @property
    def is_identity(self) -> bool:
        """Whether the settings change nothing (then :class:`BatchAugment` returns its input)."""
        return not (self.geometric or self.brightness or self.contrast)


def _pixel_centres(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised coordinates of ``n`` pixel centres, as ``affine_grid(align_corners=False)``."""
    return (torch.arange(n, dtype=dtype, device=device) * 2 + 1) / n - 1


def _gaussian_matrix(
    n: int, sigma: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``(n, n)`` matrix whose product blurs along one axis (zero padding, 3-sigma support)."""
    radius = math.ceil(3 * sigma)
    total = sum(math.exp(-0.5 * (r / sigma) ** 2) for r in range(-radius, radius + 1))
    i = torch.arange(n, dtype=dtype, device=device)
    d = i.view(-1, 1) - i.view(1, -1)
    return torch.exp(-0.5 * (d / sigma) ** 2) * (d.abs() <= radius) / total


def _affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, C, h, w), align_corners=False)``, 10x faster on CPU.

    affine_grid multiplies a (H*W, 3) base grid by theta; with an inner size of 3 that
    matmul is slow. The grid is a column part plus a row part, one broadcast add.
    """
    xs = _pixel_centres(w, theta.dtype, theta.device)
    ys = _pixel_centres(h, theta.dtype, theta.device)
    columns = theta[:, :, 0:1] * xs + theta[:, :, 2:3]  # (B, 2, W)
    rows = theta[:, :, 1:2] * ys  # (B, 2, H)
    return columns.transpose(1, 2).unsqueeze(1) + rows.transpose(1, 2).unsqueeze(2)  # (B, H, W, 2)


class BatchAugment:
    """Applies :class:`AugmentConfig` to a normalised float batch ``(B, C, H, W)``.

    Every sample gets its own random parameters. Given a generator (on the batch's device)
    the result is deterministic; without one, torch's global generator is used.
    """

    def __init__(
        self,
        config: AugmentConfig,
        mean: float | Sequence[float],
        std: float | Sequence[float],
    ) -> None:
        """
        Args:
            config: what to randomise.
            mean, std: the normalisation the batches carry (one value or one per channel, as
                given to :func:`normalize`; 0 and 1 for batches on [0, 1]). Required, because
                the fill of a black pixel, ``-mean / std``, depends on them.

        Raises:
            ConfigError: a std value is not positive.
        """
        _check_std(std, "BatchAugment")
        self.config = config
        self.mean = mean
        self.std = std

    def __repr__(self) -> str:
        return f"BatchAugment({self.config!r}, mean={self.mean!r}, std={self.std!r})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a batch; returns ``x`` itself when the config changes nothing.

        Raises:
            ShapeError: ``x`` is not a floating-point ``(B, C, H, W)`` tensor, or its channels
                do not match mean/std.
        """
        if x.ndim != 4 or not x.is_floating_point():
            raise ShapeError(
                f"BatchAugment expects a float tensor (B, C, H, W), got {x.dtype} of shape "
                f"{tuple(x.shape)}"
            )
        cfg = self.config
        if cfg.is_identity or x.shape[0] == 0:
            return x
        b, c = x.shape[:2]
        mean = _per_channel(self.mean, c, "mean").to(x.device, x.dtype)
        std = _per_channel(self.std, c, "std").to(x.device, x.dtype)
        # Uniform draws in [0, 1) for: angle, scale, shear, tx, ty, hflip, vflip, bright, contr.
        u = torch.rand(b, 9, generator=generator, device=x.device, dtype=x.dtype)
        if cfg.geometric:
            fill = -mean / std  # (C, 1, 1): a black pixel after normalisation
            grid = self._grid(u, x, generator)
            # grid_sample pads with zeros; shifting by the fill makes outside pixels black.
            x = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros",
                              align_corners=False) + fill
        if cfg.brightness or cfg.contrast:
            factor = (1 + cfg.contrast * (2 * u[:, 8] - 1)).view(b, 1, 1, 1)
            shift = (cfg.brightness * (2 * u[:, 7] - 1)).view(b, 1, 1, 1) / std
            centre = x.mean(dim=(2, 3), keepdim=True)  # contrast pivots on each image's mean
            x = (x - centre) * factor + centre + shift
            x = torch.maximum(torch.minimum(x, (1 - mean) / std), -mean / std)  # stay in [0, 1]
        return x

    def _grid(
        self, u: torch.Tensor, x: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """The sampling grid ``(B, H, W, 2)``: per-sample affine map plus the elastic field."""
        cfg = self.config
        b, _, h, w = x.shape
        angle = torch.deg2rad(cfg.rotation * (2 * u[:, 0] - 1))
        scale = cfg.scale[0] + (cfg.scale[1] - cfg.scale[0]) * u[:, 1]
        shear = torch.tan(torch.deg2rad(cfg.shear * (2 * u[:, 2] - 1)))
        flip_x = 1 - 2 * (u[:, 5] < 0.5).to(x.dtype) if cfg.hflip else torch.ones_like(scale)
        flip_y = 1 - 2 * (u[:, 6] < 0.5).to(x.dtype) if cfg.vflip else torch.ones_like(scale)
        # Forward map on centred pixel coordinates: M = rotate @ shear @ diag(scale * flip).
        cos, sin = torch.cos(angle), torch.sin(angle)
        sx, sy = scale * flip_x, scale * flip_y
        m00, m01 = cos * sx, (cos * shear - sin) * sy
        m10, m11 = sin * sx, (sin * shear + cos) * sy
        # affine_grid maps output to input coordinates, so theta holds the inverse of M, taken
        # in normalised coordinates ([-1, 1] across W and across H, hence the H/W factors).
        det = m00 * m11 - m01 * m10
        a00, a01 = m11 / det, -m01 / det * (h / w)
        a10, a11 = -m10 / det * (w / h), m00 / det
        tx = 2 * cfg.translate * (2 * u[:, 3] - 1)  # shift in normalised units (2 = full width)
        ty = 2 * cfg.translate * (2 * u[:, 4] - 1)
        rows_of_theta = [a00, a01, -(a00 * tx + a01 * ty), a10, a11, -(a10 * tx + a11 * ty)]
        theta = torch.stack(rows_of_theta, dim=1).view(b, 2, 3)
        grid = _affine_grid(theta, h, w)
        if cfg.elastic_alpha:
            grid = grid + self._elastic(b, h, w, x, generator)
        return grid  # (B, H, W, 2)

    def _elastic(
        self, b: int, h: int, w: int, x: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Smoothed random displacements (Simard et al. 2003) in normalised units, (B, H, W, 2)."""
        cfg = self.config
        noise = torch.rand(b, 2, h, w, generator=generator, device=x.device, dtype=x.dtype)
        noise = 2 * noise - 1  # (B, 2, H, W): x and y displacement, uniform in [-1, 1]
        # A Gaussian blur as two small matrix products: far faster than conv2d on CPU.
        blur_h = _gaussian_matrix(h, cfg.elastic_sigma, x.dtype, x.device)
        blur_w = _gaussian_matrix(w, cfg.elastic_sigma, x.dtype, x.device)
        field = blur_h @ noise @ blur_w.T  # (B, 2, H, W), in pixels per unit alpha
        scale = torch.tensor([2 / w, 2 / h], dtype=x.dtype, device=x.device) * cfg.elastic_alpha
        return field.permute(0, 2, 3, 1) * scale  # (B, H, W, 2), normalised units
