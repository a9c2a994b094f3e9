"""Attributes of a handwritten digit measured from its image, for data that has no writer
metadata (image folders, uploads, feedback): stroke thickness, slant, size and amount of ink.

They are computed on the image in MNIST form (white ink on black, the digit fitted to a 20x20
box and centred in 28x28: what the model sees for an ``mnist-digits`` checkpoint), so they
compare digits with each other rather than scans with photos:

- ``thickness``: the mean stroke width in pixels, the ink (summed intensity) over the length
  of its skeleton (scikit-image's ``skeletonize``);
- ``slant``: the shear of the ink, ``mu11 / mu02`` of the intensity moments (the shear that
  deskewing removes; positive leans right, as ``/``);
- ``size``: the area of the ink's bounding box as a share of the image;
- ``ink``: the mean intensity on [0, 1], how much ink the digit holds.

:func:`quantile_groups` bins one attribute into quantile groups, the groups a fairness
breakdown compares.
"""

from __future__ import annotations

import numpy as np

from cnnlab.errors import ConfigError, DataError

__all__ = ["ATTRIBUTES", "digit_attributes", "quantile_groups"]

ATTRIBUTES: dict[str, str] = {
    "thickness": "mean stroke width in pixels (ink / skeleton length)",
    "slant": "shear of the ink (mu11 / mu02; > 0 leans right)",
    "size": "bounding box of the ink as a share of the image",
    "ink": "mean intensity on [0, 1]",
}
_INK = 0.5  # a pixel is ink above half intensity (MNIST strokes are near 1, edges anti-aliased)


def _grey(images: np.ndarray) -> np.ndarray:
    """(N, H, W) float on [0, 1] from uint8 (N, C, H, W) or (N, H, W)."""
    x = np.asarray(images)
    if x.ndim == 4:
        x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    if x.ndim != 3:
        raise DataError(f"digit attributes need images (N, C, H, W) or (N, H, W); got shape "
                        f"{x.shape}")
    return x.astype(np.float64) / 255.0


def digit_attributes(images: np.ndarray) -> dict[str, np.ndarray]:
    """``thickness``, ``slant``, ``size`` and ``ink`` of each image (see the module docstring).

    Args:
        images: uint8 images in MNIST form, (N, C, H, W) or (N, H, W); bright ink on dark.

    Returns:
        name -> float64 (N,). A blank image gets 0 thickness, slant and size.

    Raises:
        DataError: not a stack of images.
    """
    from skimage.morphology import skeletonize

    x = _grey(images)  # (N, H, W)
    _n, h, w = x.shape
    ink = x.mean(axis=(1, 2))
    binary = x > _INK
    area = binary.sum(axis=(1, 2))
    # skeletonize is 2-D per image (a 3-D array would be a 3-D skeleton): ~10 us each
    length = np.array([skeletonize(b).sum() if a else 0 for b, a in zip(binary, area,
                                                                            strict=True)])
    # ink mass (not the thresholded area) over skeleton length: anti-aliased edges count by
    # their intensity, so half a pixel of stroke is half a pixel of width
    thickness = np.where(length > 0, x.sum(axis=(1, 2)) / np.maximum(length, 1), 0.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    mass = x.sum(axis=(1, 2))
    safe = np.where(mass > 0, mass, 1.0)
    cy = (x * yy).sum(axis=(1, 2)) / safe
    cx = (x * xx).sum(axis=(1, 2)) / safe
    dy = yy[None] - cy[:, None, None]
    dx = xx[None] - cx[:, None, None]
    mu11 = (x * dx * dy).sum(axis=(1, 2)) / safe
    mu02 = (x * dy * dy).sum(axis=(1, 2)) / safe
    # image rows grow downwards: a "/" stroke has x falling as y grows, so negate
    slant = np.where(mu02 > 1e-9, -mu11 / np.maximum(mu02, 1e-9), 0.0)
    rows = np.any(binary, axis=2)  # (N, H)
    cols = np.any(binary, axis=1)  # (N, W)
    height = np.where(np.any(rows, axis=1), h - np.argmax(rows[:, ::-1], axis=1)
                      - np.argmax(rows, axis=1), 0)
    width = np.where(np.any(cols, axis=1), w - np.argmax(cols[:, ::-1], axis=1)
                     - np.argmax(cols, axis=1), 0)
    size = height * width / float(h * w)
    return {"thickness": thickness.astype(np.float64), "slant": slant, "size": size,
            "ink": ink}


def quantile_groups(values: np.ndarray, bins: int = 4, *, name: str = "value"
                    ) -> tuple[np.ndarray, list[str]]:
    """Bin ``values`` into ``bins`` quantile groups, lowest first.

    Returns:
        (labels, order): a label per value, such as ``"thickness Q1 [1.10, 1.62)"``, and the
        labels in order. Tied quantile edges merge, so there may be fewer groups than ``bins``.

    Raises:
        ConfigError: ``bins`` is not an int from 2 to 20.
        DataError: no values, or a value that is not finite.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or not 2 <= bins <= 20:
        raise ConfigError(f"The 'bins' parameter of quantile_groups must be an int from 2 to 20. "
                          f"Got {bins!r} instead.")
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or not np.isfinite(v).all():
        raise DataError(f"{name}: quantile groups need finite values; got {v.size} values, "
                        f"{int((~np.isfinite(v)).sum())} not finite")
    edges = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        edges = np.array([v.min(), v.max()])
    inner = edges[1:-1]
    index = np.searchsorted(inner, v, side="right")  # 0 .. len(edges) - 2
    order = []
    for i in range(len(edges) - 1):
        close = "]" if i == len(edges) - 2 else ")"
        order.append(f"{name} Q{i + 1} [{edges[i]:.3g}, {edges[i + 1]:.3g}{close}")
    labels = np.array(order, dtype=object)[index]
    return labels.astype(str), order
