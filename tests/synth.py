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


# --- digits on paper, and colour folders (tests/test_one_data_path.py) -----------------------

# the image modes and file formats a folder, an upload or a scan may come in
IMAGE_FORMS = ("L", "RGB", "RGBA", "RGBA-transparent", "P", "I;16", "JPEG-L", "JPEG-RGB")


def render_digit(digit: np.ndarray, size: tuple[int, int] = (64, 64), *,
                 dark_on_light: bool = True, fill: float = 0.8, blur: float = 0.0,
                 noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """An MNIST-form digit (uint8 ``(28, 28)``, ink high) drawn on a page of ``size = (width,
    height)``: scaled to ``fill`` of the shorter side keeping its aspect ratio, centred, dark ink
    on light paper (or light on dark), with a Gaussian ``blur`` (radius in pixels) and
    Gaussian ``noise`` (standard deviation in grey levels). Returns uint8 ``(height, width)``."""
    from PIL import ImageFilter

    width, height = size
    side = max(1, round(min(width, height) * fill))
    ink = Image.fromarray(np.ascontiguousarray(digit)).resize((side, side),
                                                              Image.Resampling.BILINEAR)
    page = Image.new("L", (width, height), 0)
    page.paste(ink, ((width - side) // 2, (height - side) // 2))
    if blur > 0:
        page = page.filter(ImageFilter.GaussianBlur(blur))
    values = np.asarray(page, dtype=np.float64) / 255.0
    paper, stroke = (235.0, 25.0) if dark_on_light else (15.0, 240.0)
    grey = paper + (stroke - paper) * values
    if noise > 0:
        grey = grey + np.random.default_rng(seed).normal(0.0, noise, grey.shape)
    return np.clip(grey, 0, 255).round().astype(np.uint8)


def encode_image(grey: np.ndarray, form: str = "L", *, tint: tuple[int, int, int] = (40, 70, 160),
                 quality: int = 90) -> tuple[bytes, str]:
    """A greyscale page as file bytes in one of :data:`IMAGE_FORMS`; returns ``(bytes,
    suffix)``. Colour forms draw the page in ``tint`` (dark pixels take the tint, light ones
    stay light); ``RGBA-transparent`` keeps the ink opaque on a transparent page; ``I;16`` is a
    16-bit greyscale PNG; the JPEG forms are lossy at ``quality``."""
    g = grey.astype(np.float64) / 255.0
    rgb = np.stack([g * 255 + (1 - g) * t for t in tint], axis=2).round().astype(np.uint8)
    buf = io.BytesIO()
    if form == "L":
        Image.fromarray(grey, "L").save(buf, format="PNG")
    elif form == "RGB":
        Image.fromarray(rgb, "RGB").save(buf, format="PNG")
    elif form == "RGBA":
        alpha = np.full(grey.shape, 255, np.uint8)
        Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(buf, format="PNG")
    elif form == "RGBA-transparent":
        # ink where the page differs from its border's level, the rest transparent
        paper = float(np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])))
        alpha = np.clip(np.abs(grey.astype(np.float64) - paper) * 3, 0, 255).astype(np.uint8)
        Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(buf, format="PNG")
    elif form == "P":
        Image.fromarray(rgb, "RGB").convert("P", palette=Image.Palette.ADAPTIVE,
                                            colors=64).save(buf, format="PNG")
    elif form == "I;16":
        Image.fromarray(grey.astype(np.uint16) * 257).save(buf, format="PNG")
    elif form == "JPEG-L":
        Image.fromarray(grey, "L").save(buf, format="JPEG", quality=quality)
    elif form == "JPEG-RGB":
        Image.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=quality)
    else:
        raise ValueError(f"unknown form {form!r}; expected one of {', '.join(IMAGE_FORMS)}")
    return buf.getvalue(), ".jpg" if form.startswith("JPEG") else ".png"


# one colour per class, so a colour folder is learnable from colour alone as well as position
_COLOURS = [(230, 60, 60), (60, 200, 60), (60, 90, 230), (230, 200, 40), (200, 60, 220),
            (40, 210, 210), (240, 140, 30), (140, 140, 140), (120, 60, 20), (250, 250, 250)]


def write_rgb_image_folder(root: Path, n_per_class: int = 16, num_classes: int = 4,
                           size: int = 32, seed: int = 0,
                           classes: list[str] | None = None) -> Path:
    """Write learnable colour images as root/<class>/<i>.png (RGB) and return root: class k
    is :func:`learnable_images`' square k painted in colour k."""
    assert num_classes <= len(_COLOURS)
    images, targets = learnable_images(n_per_class, num_classes, size, 1, seed)
    names = classes or [f"class_{k}" for k in range(num_classes)]
    for i, (img, k) in enumerate(zip(images, targets, strict=True)):
        level = img[0].numpy().astype(np.float64)[:, :, None] / 255.0
        rgb = (level * np.array(_COLOURS[int(k)], dtype=np.float64)).round().astype(np.uint8)
        d = root / names[int(k)]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb, "RGB").save(d / f"{i:04d}.png")
    return root


def train_small_abc_model(root: Path) -> Path:
    """A small convnet trained on a 28x28 folder of classes a, b, c with a test/ split (the
    champion of the service and feedback tests); returns its run directory."""
    from cnnlab.config import resolve_config
    from cnnlab.training.loop import fit

    write_image_folder(root / "data" / "train", n_per_class=16, num_classes=3, size=28,
                       classes=["a", "b", "c"])
    write_image_folder(root / "data" / "test", n_per_class=4, num_classes=3, size=28, seed=3,
                       classes=["a", "b", "c"])
    cfg = resolve_config({"model": {"name": "convnet", "width": 4},
                          "data": {"dataset": str(root / "data"), "val_fraction": 0.2},
                          "train": {"epochs": 2, "batch_size": 16, "threads": 1}})
    fit(cfg, out_dir=root / "run", progress=False)
    return root / "run"
