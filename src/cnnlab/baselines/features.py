"""Handcrafted image features for the traditional baselines: raw pixels, Sobel and Canny edge
maps, HOG.

Every extractor takes uint8 images ``(N, C, H, W)`` (C = 1, or 3, which is reduced to grey
with ITU-R 601 luma weights) and returns float32 feature vectors ``(N, D)``. Pixels and
Sobel are vectorised over the whole batch; Canny and HOG call scikit-image once per image,
so :func:`extract_features` runs them in chunks with progress.

::

    >>> x = extract_features("hog", ds.images, progress=True)   # (N, 1296) on 28x28
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.errors import ShapeError
from cnnlab.progress import Progress
from cnnlab.registry import Registry

__all__ = [
    "FEATURES",
    "HOG_CELL",
    "canny_edges",
    "canny_features",
    "create_feature",
    "deskew",
    "deskewed_hog_features",
    "edge_features",
    "extract_features",
    "hog_descriptor_length",
    "hog_features",
    "pixel_features",
    "sobel_features",
    "sobel_magnitude",
]

FeatureFn = Callable[[np.ndarray], np.ndarray]

FEATURES: Registry[FeatureFn] = Registry("feature")

# HOG as commonly used on MNIST: 9 unsigned orientations, 4x4-pixel cells, 2x2-cell blocks
# with L2-Hys normalisation; 28x28 gives 6x6 blocks x 2x2 cells x 9 bins = 1296 values.
HOG_CELL = 4
HOG_ORIENTATIONS = 9
HOG_BLOCK = 2

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _check_shape(arr: np.ndarray, func: str) -> None:
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise ShapeError(
            f"The 'images' parameter of {func} must be an array (N, C, H, W) with C = 1 or 3. "
            f"Got shape {tuple(arr.shape)} instead."
        )


def _as_grey(images: np.ndarray | torch.Tensor, func: str) -> np.ndarray:
    """float32 (N, H, W) on [0, 1] from uint8 (N, C, H, W) with C in {1, 3}.

    Raises:
        ShapeError: not a 4-D array with 1 or 3 channels.
    """
    arr = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    _check_shape(arr, func)
    scale = 255.0 if arr.dtype == np.uint8 else 1.0
    x = arr.astype(np.float32) / scale
    if x.shape[1] == 3:
        return np.tensordot(x, _LUMA, axes=([1], [0])).astype(np.float32)  # (N, H, W)
    return x[:, 0]


def sobel_magnitude(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Sobel gradient magnitude maps (N, H, W) on [0, 1], the whole batch at once.

    Kernels and scaling follow ``skimage.filters.sobel``: smoothing [1, 2, 1] / 4 times the
    difference [1, 0, -1], magnitude ``sqrt((gx**2 + gy**2) / 2)``, and borders that repeat
    the edge pixel. A step from 0 to 255 therefore gives 1/sqrt(2) on both sides of it.

    Raises:
        ShapeError: not (N, C, H, W) with C = 1 or 3.
    """
    x = torch.from_numpy(_as_grey(images, "sobel_magnitude"))[:, None]  # (N, 1, H, W)
    x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    smooth = torch.tensor([1.0, 2.0, 1.0]) / 4
    diff = torch.tensor([1.0, 0.0, -1.0])
    kx = torch.outer(smooth, diff)[None, None]  # d/dx: differences along columns
    ky = torch.outer(diff, smooth)[None, None]
    gx = F.conv2d(x, kx)  # (N, 1, H, W)
    gy = F.conv2d(x, ky)
    return torch.sqrt((gx * gx + gy * gy) / 2)[:, 0].numpy()


def canny_edges(images: np.ndarray | torch.Tensor, sigma: float = 1.0) -> np.ndarray:
    """Binary Canny edge maps (N, H, W) as float32 0/1 (``skimage.feature.canny``).

    Raises:
        ShapeError: not (N, C, H, W) with C = 1 or 3.
    """
    from skimage.feature import canny

    x = _as_grey(images, "canny_edges")
    out = np.empty_like(x)
    for i, img in enumerate(x):
        out[i] = canny(img, sigma=sigma)
    return out


def hog_descriptor_length(height: int, width: int) -> int:
    """Length of :func:`hog_features`' vector for one ``height`` x ``width`` image."""
    by, bx = height // HOG_CELL - HOG_BLOCK + 1, width // HOG_CELL - HOG_BLOCK + 1
    return max(by, 0) * max(bx, 0) * HOG_BLOCK * HOG_BLOCK * HOG_ORIENTATIONS


@FEATURES.register("pixels", description="raw pixels scaled to [0, 1], flattened (H*W)")
def pixel_features(images: np.ndarray) -> np.ndarray:
    return _as_grey(images, "pixel_features").reshape(len(images), -1)


@FEATURES.register("sobel", description="Sobel gradient magnitude map, flattened (H*W)")
def sobel_features(images: np.ndarray) -> np.ndarray:
    return sobel_magnitude(images).reshape(len(images), -1)


@FEATURES.register("canny", description="Canny edge map (sigma 1), flattened (H*W)")
def canny_features(images: np.ndarray) -> np.ndarray:
    return canny_edges(images).reshape(len(images), -1)


@FEATURES.register("edges", description="Sobel magnitude and Canny edge maps side by side (2*H*W)")
def edge_features(images: np.ndarray) -> np.ndarray:
    n = len(images)
    return np.concatenate(
        [sobel_magnitude(images).reshape(n, -1), canny_edges(images).reshape(n, -1)], axis=1)


@FEATURES.register("hog", description="HOG: 9 orientations, 4x4-pixel cells, 2x2-cell blocks, "
                                      "L2-Hys (1296 values on 28x28)")
def hog_features(images: np.ndarray) -> np.ndarray:
    from skimage.feature import hog

    x = _as_grey(images, "hog_features")
    h, w = x.shape[1:]
    if hog_descriptor_length(h, w) == 0:
        raise ShapeError(f"hog_features needs images of at least {HOG_CELL * HOG_BLOCK}x"
                         f"{HOG_CELL * HOG_BLOCK} pixels. Got {h}x{w} instead.")
    out = np.empty((len(x), hog_descriptor_length(h, w)), dtype=np.float32)
    for i, img in enumerate(x):
        out[i] = hog(img, orientations=HOG_ORIENTATIONS, pixels_per_cell=(HOG_CELL, HOG_CELL),
                     cells_per_block=(HOG_BLOCK, HOG_BLOCK), block_norm="L2-Hys",
                     feature_vector=True)
    return out


def deskew(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Straighten slanted digits: shear each image horizontally so that its ink has no
    correlation between row and column (second moments ``mu11 = 0``), about the image centre.

    The classic MNIST preprocessing (LeCun et al. 1998 list "deskewed" results). Returns uint8
    ``(N, 1, H, W)``; an image without ink, or with almost no vertical extent, is unchanged.

    Raises:
        ShapeError: not (N, C, H, W) with C = 1 or 3.
    """
    x = torch.from_numpy(_as_grey(images, "deskew"))[:, None]  # (N, 1, H, W) on [0, 1]
    n, _, h, w = x.shape
    ys = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w)
    mass = x.sum((2, 3), keepdim=True).clamp(min=1e-6)
    cy = (x * ys).sum((2, 3), keepdim=True) / mass
    cx = (x * xs).sum((2, 3), keepdim=True) / mass
    mu11 = (x * (ys - cy) * (xs - cx)).sum((2, 3), keepdim=True) / mass
    mu02 = (x * (ys - cy) ** 2).sum((2, 3), keepdim=True) / mass
    skew = torch.where(mu02 > 1e-2, mu11 / mu02.clamp(min=1e-2), 0.0)[:, 0, 0, 0]  # (N,)
    # output pixel (y, x) reads the input at (y, x + skew * (y - H/2)), bilinearly
    gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    src_x = gx + skew.view(n, 1, 1) * (gy - h / 2)  # (N, H, W)
    src_y = gy.expand(n, h, w)
    grid = torch.stack([(2 * src_x + 1) / w - 1, (2 * src_y + 1) / h - 1], dim=-1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out * 255).round().clamp(0, 255).to(torch.uint8).numpy()


@FEATURES.register("deskew-hog", description="HOG (as 'hog') of deskewed images: slanted digits "
                                             "straightened first")
def deskewed_hog_features(images: np.ndarray) -> np.ndarray:
    return hog_features(deskew(images))


def create_feature(name: str) -> FeatureFn:
    """The extractor registered as ``name``.

    Raises:
        RegistryError: unknown name, with a "did you mean".
    """
    return FEATURES.get(name)


def extract_features(
    name: str,
    images: np.ndarray | torch.Tensor,
    *,
    chunk_size: int = 2000,
    progress: bool = False,
    desc: str | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """Features ``(N, D)`` float32 of ``images`` with the extractor ``name``, in chunks of
    ``chunk_size`` images with a progress line per chunk.

    Raises:
        RegistryError: unknown feature name.
        ShapeError: images that are not (N, C, H, W) with C = 1 or 3.
        ValueError: ``chunk_size`` < 1.
    """
    fn = create_feature(name)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError("The 'chunk_size' parameter of extract_features must be an int >= 1. "
                         f"Got {chunk_size!r} instead.")
    arr = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    _check_shape(arr, "extract_features")
    parts = []
    with Progress(len(arr), desc or f"{name} features", "img", enabled=progress) as bar:
        for start in range(0, len(arr), chunk_size):
            chunk = arr[start:start + chunk_size]
            parts.append(fn(chunk, **kwargs))
            bar.update(len(chunk))
    if not parts:
        return np.empty((0, 0), dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)
