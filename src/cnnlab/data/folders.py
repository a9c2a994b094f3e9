"""Image files: a guarded decoder for single images and the ``root/<class>/<image>`` loader.

:func:`read_image` is the one way cnnlab decodes an image it did not make (folders, predict,
uploads to the HTTP service): it bounds the pixel count against decompression bombs, applies
the EXIF orientation of phone photos, and reports unreadable files by name.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.errors import ConfigError, DataError, DatasetNotFoundError, ImageTooLargeError
from cnnlab.progress import Progress

from .datasets import ImageDataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "FolderListing",
    "image_to_array",
    "list_image_folder",
    "load_image_folder",
    "probe_images",
    "read_folder_images",
    "read_image",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
MAX_IMAGE_PIXELS = 40_000_000  # about 7300 x 5500: above common phone photos, 120 MB as RGB
# Images above this are shrunk by an integer factor while decoded, by every reader (folders,
# predict, the service), so memory follows the reduced size and two commands never see one
# file differently; every model input is far smaller (at most 224 a side by default).
REDUCE_ABOVE_PIXELS = 2_100_000
# Formats Pillow may decode: the common ones, so a crafted file cannot reach rarer decoders.
_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "F"})
_MAX_LISTED = 10


def read_image(
    source: str | os.PathLike[str] | bytes,
    *,
    name: str | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
    reduce_above: int | None = REDUCE_ABOVE_PIXELS,
) -> Image.Image:
    """Decode an image file or its bytes into a loaded PIL image, upright per its EXIF tag.

    Args:
        source: a path, or the encoded bytes (an upload).
        name: what to call the image in errors (default: the path, or ``"<bytes>"``).
        max_pixels: refuse images with more pixels than this (decompression bombs).
        reduce_above: with more pixels than this, return the image shrunk by the smallest
            integer factor that brings it to at most this many (box averaging: JPEG's
            decoder scales by 1/2, 1/4 or 1/8 itself, :meth:`PIL.Image.Image.reduce` does the
            rest), so the memory and the float work after it follow the reduced size, not
            the file's. Default :data:`REDUCE_ABOVE_PIXELS`, the same for every reader;
            None: the full size.

    Raises:
        ImageTooLargeError: more pixels than ``max_pixels`` (or a decompression bomb).
        DataError: the file is missing, unreadable, not a supported image (PNG, JPEG, BMP,
            GIF, WebP, TIFF) or truncated.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        # Pillow warns (then raises, at 2x) above its own global limit while opening; make
        # that an error here without touching the global, and apply our tighter limit too.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Pillow's warnings about damaged metadata ("Corrupt EXIF data" in a cut TIFF)
            # are not errors: the decoding goes on and fails, or not, as it would
            # anywhere, whatever the caller's warning filters say
            warnings.simplefilter("ignore", UserWarning)
            image = Image.open(stream, formats=_FORMATS)
            with image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageTooLargeError(
                        f"{label}: image of {width}x{height} = {width * height:,} pixels "
                        f"exceeds the limit of {max_pixels:,}; scale it down first"
                    )
                fmt = image.format
                if reduce_above is not None and width * height > reduce_above:
                    loaded = _reduced(image, reduce_above)
                else:
                    image.load()
                    loaded = image
                if fmt in ("PNG", "JPEG", "BMP") and not any(
                        key in loaded.info for key in ("exif", "Raw profile type exif")):
                    return loaded  # no orientation tag to apply: upright, and loaded
                return ImageOps.exif_transpose(loaded)  # a loaded copy, free of the file
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLargeError(f"{label}: refused as a decompression bomb ({e}); scale it "
                                 "down") from e
    except FileNotFoundError as e:
        raise DataError(f"{label}: no such file; check the path") from e
    except UnidentifiedImageError as e:
        raise DataError(
            f"{label}: not a readable image (supported: {', '.join(_FORMATS)}); "
            "check the file is an image and not empty"
        ) from e
    except (OSError, SyntaxError, ValueError) as e:  # Pillow's errors for corrupt data
        raise DataError(f"{label}: corrupt or truncated image ({e}); re-export the file") from e


def _reduced(image: Image.Image, max_pixels: int) -> Image.Image:
    """``image`` (opened, not loaded) decoded and shrunk by an integer factor to at most
    ``max_pixels`` pixels; see :func:`read_image`'s ``reduce_above``."""
    width, height = image.size
    factor = math.ceil(math.sqrt(width * height / max_pixels))
    if image.format == "JPEG":  # the decoder itself scales by 1/2, 1/4 or 1/8
        image.draft(image.mode, (math.ceil(width / factor), math.ceil(height / factor)))
    image.load()
    # modes whose values are not intensities (palette indices, bits) or that reduce() does
    # not take become their plain equivalents first
    plain = {"P": "RGBA", "PA": "RGBA", "1": "L", "I;16": "I", "I;16B": "I", "I;16L": "I"}
    if image.mode in plain:
        image = image.convert(plain[image.mode])
    width, height = image.size
    factor = math.ceil(math.sqrt(width * height / max_pixels))
    return image.reduce(factor) if factor > 1 else image


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Drop transparency by compositing on white, the way viewers show it."""
    if image.mode in ("RGBA", "LA", "PA", "P") and (
        image.mode != "P" or "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert(
            "L" if image.mode in ("LA", "La") else "RGB"
        )
    return image


def _is_gray(image: Image.Image) -> bool:
    return image.mode in _GRAY_MODES


def image_to_array(
    image: Image.Image, channels: int, size: tuple[int, int] | None = None,
    resample: Image.Resampling = Image.Resampling.LANCZOS,
) -> np.ndarray:
    """A PIL image as uint8 ``(C, H, W)`` with 1 (luma) or 3 (RGB) channels.

    Transparency is composited on white; ``size=(H, W)`` resizes with ``resample``
    (antialiased Lanczos by default).

    Raises:
        ConfigError: ``channels`` is not 1 or 3, or ``size`` is not two positive ints.
    """
    if channels not in (1, 3):
        raise ConfigError(
            f"The 'channels' parameter of image_to_array must be 1 or 3. Got {channels!r} instead."
        )
    image = _flatten_alpha(image)
    if image.mode in ("I", "I;16", "F"):  # 16-bit or float greyscale: scale to 8 bits
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I") and values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    image = image.convert("L" if channels == 1 else "RGB")
    if size is not None:
        _check_size(size)
        if image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), resample)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _check_size(size: object) -> None:
    ok = (
        isinstance(size, tuple | list)
        and len(size) == 2
        and all(isinstance(v, int) and v > 0 for v in size)
    )
    if not ok:
        raise ConfigError(
            f"The 'size' parameter must be a pair of positive ints (height, width) or None. "
            f"Got {size!r} instead."
        )


def _image_files(class_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in class_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _listing(items: list[str]) -> str:
    shown = "; ".join(items[:_MAX_LISTED])
    return shown + (f"; and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


@dataclass(frozen=True)
class FolderListing:
    """The image files of a ``root/<class>/<image>`` folder, in a stable order."""

    root: Path
    classes: list[str]  # sorted by name
    paths: list[str]  # relative to root, '/'-separated
    targets: list[int]  # index into classes, one per path

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Any) -> FolderListing:
        idx = [int(i) for i in indices]
        return FolderListing(self.root, self.classes, [self.paths[i] for i in idx],
                             [self.targets[i] for i in idx])


def list_image_folder(root: str | os.PathLike[str]) -> FolderListing:
    """The image files of ``root/<class>/*.{png,jpg,jpeg,bmp}``; classes sorted by name.

    Hidden files and directories and other extensions are skipped; extensions match in any
    case. Only the files directly inside each class directory count.

    Raises:
        DatasetNotFoundError: ``root`` does not exist or is not a directory.
        DataError: no class directories, or class directories without images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"{root}: no such directory; expected a folder with one sub-directory of images "
            "per class (root/<class>/<image>.png)"
        )
    class_dirs = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    if not class_dirs:
        raise DataError(
            f"{root}: no class sub-directories; put the images of each class in their own "
            f"folder: {root}/<class>/<image>.png"
        )
    files = {d.name: _image_files(d) for d in class_dirs}
    empty = [name for name, paths in files.items() if not paths]
    if empty:
        raise DataError(
            f"{root}: class directories without images ({', '.join(sorted(IMAGE_EXTENSIONS))}): "
            f"{', '.join(empty)}; add images to them or remove them"
        )
    paths, targets = [], []
    for label, found in enumerate(files.values()):
        for p in found:
            paths.append(p.relative_to(root).as_posix())
            targets.append(label)
    return FolderListing(root, list(files), paths, targets)


def probe_images(listing: FolderListing, limit: int = 0) -> tuple[Counter[tuple[int, int]], bool]:
    """The image sizes ``(H, W)`` (with counts) and whether every image is greyscale, read
    from the file headers only (no pixel is decoded); ``limit`` > 0 looks at that many
    files spread over the folder."""
    paths = listing.paths
    if limit and len(paths) > limit:
        step = len(paths) / limit
        paths = [paths[int(i * step)] for i in range(limit)]
    sizes: Counter[tuple[int, int]] = Counter()
    gray = True
    for rel in paths:
        try:
            with Image.open(listing.root / rel, formats=_FORMATS) as im:
                sizes[(im.size[1], im.size[0])] += 1
                gray = gray and _is_gray(im) and "transparency" not in im.info
        except (OSError, SyntaxError, ValueError):
            continue  # unreadable files are reported, by name, when the images are read
    return sizes, gray


def read_folder_images(
    listing: FolderListing,
    transform: Callable[[Image.Image], np.ndarray],
    *,
    progress: bool = True,
    name: str | None = None,
) -> tuple[ImageDataset, list[str]]:
    """Decode every file of ``listing`` and bring it to model input with ``transform``.

    Returns:
        The dataset (uint8 images as ``transform`` made them) and the SHA-256 of each file's
        bytes, in the listing's order (for split manifests).

    Raises:
        DataError: unreadable images (listed by name), images in which ``transform`` finds
            nothing to classify, or outputs of different shapes.
    """
    arrays: list[np.ndarray] = []
    digests: list[str] = []
    bad: list[str] = []
    root = listing.root
    label = name or root.name
    with Progress(len(listing), f"read {label}", "img", enabled=progress) as bar:
        for rel in listing.paths:
            bar.update()
            path = root / rel
            try:
                data = path.read_bytes()
            except OSError as e:
                bad.append(f"{path}: cannot be read ({e.strerror or e})")
                continue
            try:
                arrays.append(np.asarray(transform(read_image(data, name=str(path)))))
            except DataError as e:
                message = str(e)
                bad.append(message if str(path) in message else f"{path}: {message}")
                continue
            digests.append(hashlib.sha256(data).hexdigest())
    if bad:
        raise DataError(
            f"{root}: {len(bad)} of {len(listing)} images cannot be read: {_listing(bad)}. "
            "Fix or remove these files"
        )
    shapes = Counter(a.shape for a in arrays)
    if len(shapes) > 1:
        found = ", ".join(f"{'x'.join(map(str, s))} ({n})" for s, n in shapes.most_common(5))
        raise DataError(f"{root}: the images became inputs of different shapes ({found}); "
                        "the preprocessing must give one shape")
    images = (torch.from_numpy(np.stack(arrays)) if arrays
              else torch.zeros((0, 1, 1, 1), dtype=torch.uint8))
    return ImageDataset(images=images, targets=torch.tensor(listing.targets, dtype=torch.int64),
                        classes=list(listing.classes), name=label, source=str(root)), digests


def load_image_folder(
    root: str | os.PathLike[str],
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    progress: bool = True,
    *,
    transform: Callable[[Image.Image], np.ndarray] | None = None,
) -> ImageDataset:
    """Load ``root/<class>/*.{png,jpg,jpeg,bmp}`` into memory; classes sorted by name.

    With ``transform`` (a :class:`cnnlab.inference.Preprocess`, say) every image goes
    through it, and ``channels`` and ``size`` are not used: this is how every command reads a
    folder for a model. Without it the images are converted to ``channels`` and resized to
    ``size`` (the raw view, for data tools).

    Args:
        root: the folder holding one sub-directory per class.
        channels: 1 (greyscale) or 3 (RGB); None: 1 if every image is greyscale, else 3.
        size: ``(H, W)`` to resize every image to (antialiased); None: all must share a size.
        progress: show a progress bar while decoding.
        transform: decoded image -> uint8 ``(C, H, W)``.

    Raises:
        DatasetNotFoundError: ``root`` does not exist or is not a directory.
        ConfigError: bad ``channels`` or ``size``.
        DataError: no class directories, class directories without images, unreadable
            images (listed by name), or images of different sizes with ``size=None``.
    """
    if channels not in (None, 1, 3):
        raise ConfigError(
            f"The 'channels' parameter of load_image_folder must be 1, 3 or None. "
            f"Got {channels!r} instead."
        )
    if size is not None:
        _check_size(size)
        size = (int(size[0]), int(size[1]))
    listing = list_image_folder(root)
    if transform is not None:
        return read_folder_images(listing, transform, progress=progress)[0]
    if channels is None:
        _, all_gray = probe_images(listing)
        channels = 1 if all_gray else 3

    def raw(image: Image.Image) -> np.ndarray:
        return image_to_array(image, channels, size)
    try:
        return read_folder_images(listing, raw, progress=progress)[0]
    except DataError as e:
        if "different shapes" not in str(e):
            raise
        shapes = probe_images(listing)[0]
        (common, _), *_ = shapes.most_common(1)
        found = ", ".join(f"{h}x{w} ({n})" for (h, w), n in shapes.most_common(5))
        raise DataError(
            f"{listing.root}: images differ in size (HxW, count: {found}); pass a size to "
            f"resize them all to, e.g. size=({common[0]}, {common[1]})"
        ) from e
