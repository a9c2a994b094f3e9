"""Small synthetic data for tests: learnable images, image folders, prepared training data."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# Each class is a bright 7x7 square at its own place on a 4x4 grid of a 28x28 image, with
# noise and a 2-pixel jitter: trivially learnable, yet not a constant per class.
_CELLS = [(r, c) for r in range(4) for c in range(4)]


def learnable_images(
    n_per_class: int = 16, num_classes: int = 4, size: int = 28, channels: int = 1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, size, size) and int64 targets (N,)."""
    assert num_classes <= len(_CELLS)
    rng = np.random.default_rng(seed)
    n = n_per_class * num_classes
    images = rng.integers(0, 40, size=(n, channels, size, size)).astype(np.uint8)
    targets = np.repeat(np.arange(num_classes), n_per_class)
    cell = size // 4
    for i, k in enumerate(targets):
        r, c = _CELLS[k]
        dy, dx = rng.integers(-1, 2, size=2)
        y0, x0 = max(0, r * cell + dy), max(0, c * cell + dx)
        images[i, :, y0:y0 + cell, x0:x0 + cell] = 230
    perm = rng.permutation(n)
    return torch.from_numpy(images[perm]), torch.from_numpy(targets[perm]).long()


def write_image_folder(
    root: Path, n_per_class: int = 16, num_classes: int = 4, size: int = 28, seed: int = 0,
    classes: list[str] | None = None,
) -> Path:
    """Write learnable images as root/<class>/<i>.png and return root."""
    images, targets = learnable_images(n_per_class, num_classes, size, 1, seed)
    names = classes or [f"class_{k}" for k in range(num_classes)]
    for i, (img, k) in enumerate(zip(images, targets, strict=True)):
        d = root / names[int(k)]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy(), mode="L").save(d / f"{i:04d}.png")
    return root


def prepared_data(n_per_class: int = 16, num_classes: int = 4, val_per_class: int = 4,
                  test_per_class: int = 4, seed: int = 0):
    """A PreparedData of learnable images for fit() without any file I/O."""
    from cnnlab.data import ImageDataset
    from cnnlab.training.data import PreparedData, preprocessing_for

    classes = [str(k) for k in range(num_classes)]

    def ds(n: int, s: int) -> ImageDataset:
        images, targets = learnable_images(n, num_classes, seed=s)
        return ImageDataset(images, targets, classes, "synthetic", "memory")

    train = ds(n_per_class, seed)
    stats = train.stats()
    return PreparedData(
        train=train, val=ds(val_per_class, seed + 1), test=ds(test_per_class, seed + 2),
        classes=classes, mean=tuple(stats.mean), std=tuple(stats.std),
        preprocessing=preprocessing_for("synthetic", 1, (28, 28)),
    )


def make_png(size: tuple[int, int] = (28, 28), mode: str = "L", value: int = 0) -> bytes:
    """PNG bytes: a bright 12x12 square on a background of ``value``."""
    a = np.full((size[1], size[0]), value, dtype=np.uint8)
    a[8:20, 8:20] = 230
    buf = io.BytesIO()
    Image.fromarray(a, "L").convert(mode).save(buf, format="PNG")
    return buf.getvalue()
