"""Write a dataset out as an image folder, ``OUT/<class>/<index>.png``.

``sklearn-digits`` is scikit-learn's copy of the UCI optical-recognition digits: 1,797 images
of 8x8 pixels (values 0..16) written by 43 people, shipped inside the scikit-learn package, so
it needs no download. It is exported in MNIST's form by default (``form="mnist"``): the ink's
bounding box scaled to fit a 20x20 box, centred by centre of mass in a 28x28 image, white on
black, which is how MNIST itself was prepared; ``form="raw"`` keeps the 8x8 pixels (scaled to
0..255). The registered datasets (``mnist``, ...) export their images unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from cnnlab.errors import ConfigError, DataError, invalid_value
from cnnlab.progress import Progress

__all__ = ["EXPORTS", "digits_to_mnist_form", "export_dataset"]


def digits_to_mnist_form(image: np.ndarray) -> np.ndarray:
    """A small digit image (any range, ink high) as uint8 28x28 MNIST form.

    As LeCun et al. prepared MNIST: the ink's bounding box is scaled, keeping its aspect
    ratio, so that its longer side is 20 pixels, then placed so that its centre of mass lies
    at the centre of the 28x28 image.
    """
    x = np.asarray(image, dtype=np.float64)
    out = np.zeros((28, 28), dtype=np.uint8)
    if x.max() <= 0:
        return out
    x = x / x.max()
    rows, cols = np.nonzero(x > 0.05)
    x = x[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = x.shape
    f = 20 / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    box = Image.fromarray((x * 255).round().astype(np.uint8)).resize(
        size, Image.Resampling.BILINEAR)
    digit = np.asarray(box, dtype=np.float64)
    bh, bw = digit.shape
    ys, xs = np.indices(digit.shape)
    total = digit.sum()
    cy = (ys * digit).sum() / total if total > 0 else (bh - 1) / 2
    cx = (xs * digit).sum() / total if total > 0 else (bw - 1) / 2
    top = min(max(round(13.5 - cy), 0), 28 - bh)
    left = min(max(round(13.5 - cx), 0), 28 - bw)
    out[top:top + bh, left:left + bw] = digit.round().clip(0, 255).astype(np.uint8)
    return out


def _sklearn_digits(form: str) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ConfigError("exporting sklearn-digits needs scikit-learn; install it with "
                          "`pip install 'cnnlab[eval]'`") from e
    digits = load_digits()
    images = digits.images  # (1797, 8, 8), 0..16
    if form == "mnist":
        arrays = [digits_to_mnist_form(im) for im in images]
    else:
        arrays = [(im / 16 * 255).round().astype(np.uint8) for im in images]
    return arrays, digits.target.astype(np.int64), [str(k) for k in range(10)]


def _registered(name: str, split: str, data_dir: str | None, progress: bool
                ) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    from cnnlab.data import load_dataset

    ds = load_dataset(name, split, data_dir=data_dir, progress=progress)
    arrays = [im[0] if im.shape[0] == 1 else im.transpose(1, 2, 0) for im in ds.images.numpy()]
    return arrays, ds.targets.numpy(), list(ds.classes)


EXPORTS = ("sklearn-digits",)


def export_dataset(name: str, out: str | Path, *, form: str = "mnist", split: str = "train",
                   data_dir: str | None = None, limit: int = 0, overwrite: bool = False,
                   progress: bool = True) -> dict[str, int]:
    """Write dataset ``name`` to ``out/<class>/<index>.png``; returns images per class.

    The folder is written under a temporary name and renamed when complete, so an interrupted
    export leaves nothing half-written.

    Raises:
        ConfigError: unknown name or form, or ``out`` exists and ``overwrite`` is off.
        DataError, DatasetNotFoundError: the dataset cannot be read.
    """
    from cnnlab.data import DATASETS

    if form not in ("mnist", "raw"):
        raise ConfigError(invalid_value("form", form, "mnist or raw",
                                        kind="setting of export_dataset"))
    if name == "sklearn-digits":
        arrays, targets, classes = _sklearn_digits(form)
    elif name in DATASETS:
        arrays, targets, classes = _registered(name, split, data_dir, progress)
    else:
        known = ", ".join([*EXPORTS, *DATASETS.names()])
        raise ConfigError(f"cannot export {name!r}; exportable datasets: {known}")
    if limit < 0:
        raise ConfigError(invalid_value("limit", limit, ">= 0 (0 = all)",
                                        kind="setting of export_dataset"))
    if limit:
        arrays, targets = arrays[:limit], targets[:limit]
    dest = Path(out)
    occupied = dest.is_file() or (dest.is_dir() and any(dest.iterdir()))
    if occupied and not overwrite:
        raise ConfigError(f"{dest} already exists; set overwrite=True to replace it, or "
                          "choose another directory")
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    counts: dict[str, int] = {}
    bar = Progress(len(arrays), f"export {name}", "img", enabled=progress)
    try:
        tmp.mkdir(parents=True)
        for i, (array, k) in enumerate(zip(arrays, targets, strict=True)):
            c = classes[int(k)]
            if c not in counts:  # only classes with images get a folder
                (tmp / c).mkdir()
                counts[c] = 0
            Image.fromarray(array).save(tmp / c / f"{i:05d}.png")
            counts[c] += 1
            bar.update(1)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"cannot write {tmp}: {e}") from e
    bar.close()
    counts = {c: counts[c] for c in classes if c in counts}
    if dest.is_dir():
        shutil.rmtree(dest)
    elif dest.exists():
        dest.unlink()
    tmp.rename(dest)
    return counts
