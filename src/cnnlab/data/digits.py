"""Bring a real-world digit image (scan, photo, canvas drawing) into MNIST form.

MNIST digits are white ink on black, size-normalised to fit a 20x20 box with the aspect
ratio kept, antialiased, and placed in a 28x28 field so that their centre of mass sits at
the centre (pixel index 14, 14). A model trained on MNIST only works on inputs made the
same way, which is what :func:`to_mnist_form` does:

1. greyscale on [0, 1]; transparency composited on a colour that contrasts with the ink;
2. polarity from the border (paper is what touches the edges): dark ink is inverted;
3. uneven lighting removed by subtracting a quadratic surface fitted to the paper;
4. ink found by Otsu's threshold, bounded below by the noise floor; specks removed;
5. intensities rescaled so the background is 0 and solid ink 1;
6. crop to the ink, fit into 20x20 (antialiased), paste into 28x28 by centre of mass.
"""

from __future__ import annotations

from typing import cast

import numpy as np
from PIL import Image

from cnnlab.errors import DataError

__all__ = ["to_mnist_form"]

_WORK_SIDE = 512  # longer side photos are reduced to: plenty for a 20 px result
_MIN_SIDE = 128  # longer side small images are enlarged to: strokes several px wide
_MIN_CONTRAST = 0.08  # ink must differ from paper by this much (8 % of the range)
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601, as PIL's convert("L")


def _as_float(image: Image.Image | np.ndarray) -> np.ndarray:
    """``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` float64 on [0, 1]."""
    if isinstance(image, Image.Image):
        if image.mode in ("I", "I;16", "F"):
            array = np.asarray(image, dtype=np.float64)
            return array / (65535.0 if array.max() > 255 else 255.0)
        has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB" if image.mode != "L" else "L")
        return np.asarray(image, dtype=np.float64) / 255.0
    if not isinstance(image, np.ndarray):
        raise DataError(
            f"to_mnist_form expects a PIL image or a numpy array, got {type(image).__name__}"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))) or 0 in image.shape:
        raise DataError(
            f"to_mnist_form expects an array of shape (H, W), (H, W, 3) or (H, W, 4), got "
            f"{image.shape}"
        )
    if image.dtype == np.bool_:
        return image.astype(np.float64)
    array = image.astype(np.float64)
    # uint8 and floats beyond 1 are on 0..255; floats within [0, 1] are already scaled.
    top = 1.0 if image.dtype.kind == "f" and array.max() <= 1.0 else 255.0
    return np.clip(array / top, 0.0, 1.0)


def _greyscale(array: np.ndarray) -> np.ndarray:
    """Luma on [0, 1], with any transparency composited on a colour contrasting the ink."""
    if array.ndim == 2:
        return array
    luma = array[:, :, :3] @ _LUMA
    if array.shape[2] == 3:
        return luma
    alpha = array[:, :, 3]
    if alpha.min() >= 1.0:
        return luma
    # A canvas drawing is opaque strokes on a transparent background: compositing on a
    # fixed white would erase white strokes, so the backdrop opposes the strokes' colour.
    opaque = alpha > 0.5
    ink_is_light = opaque.any() and luma[opaque].mean() >= 0.5
    backdrop = 0.0 if ink_is_light else 1.0
    return alpha * luma + (1.0 - alpha) * backdrop


def _resize(array: np.ndarray, height: int, width: int, resample: Image.Resampling) -> np.ndarray:
    image = Image.fromarray(array.astype(np.float32))  # mode "F"
    return np.asarray(image.resize((width, height), resample), dtype=np.float64)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow a boolean mask by ``radius`` pixels (square window, separable)."""
    out = mask
    for axis in (0, 1):
        n = out.shape[axis]
        pad = [(radius, radius) if a == axis else (0, 0) for a in (0, 1)]
        padded = np.pad(out, pad)
        out = np.logical_or.reduce(
            [np.take(padded, range(i, i + n), axis=axis) for i in range(2 * radius + 1)]
        )
    return out


def _median3_mask(mask: np.ndarray) -> np.ndarray:
    """3x3 majority filter of a boolean mask: removes isolated specks, keeps strokes."""
    padded = np.pad(mask, 1).astype(np.uint8)
    h, w = mask.shape
    votes = np.sum([padded[i : i + h, j : j + w] for i in range(3) for j in range(3)], axis=0)
    return votes >= 5


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of values on [0, 1] (256 bins)."""
    hist, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(hist)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(hist * centres)
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def _paper_surface(grey: np.ndarray) -> np.ndarray:
    """A quadratic surface fitted to the paper pixels (those below Otsu's threshold)."""
    h, w = grey.shape
    step = max(1, round((h * w / 10_000) ** 0.5))  # fit on about 10k pixels: as good, faster
    ys = np.linspace(-1, 1, h)[:, None]
    xs = np.linspace(-1, 1, w)[None, :]
    sample = grey[::step, ::step]
    y, x = np.broadcast_arrays(ys[::step], xs[:, ::step])
    design = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1).reshape(-1, 6)
    residual = sample.ravel()
    for _ in range(2):  # refit once the first fit has flattened the lighting
        paper = residual <= _otsu(np.clip(residual, 0.0, 1.0))
        coef, *_ = np.linalg.lstsq(design[paper], sample.ravel()[paper], rcond=None)
        fitted = design @ coef
        residual = sample.ravel() - fitted + fitted.min()
    c0, c1, c2, c3, c4, c5 = coef
    return c0 + c1 * xs + c2 * ys + c3 * xs**2 + c4 * xs * ys + c5 * ys**2


def _no_ink(detail: str) -> DataError:
    return DataError(
        f"to_mnist_form: no ink found ({detail}); the image looks blank: crop it to the digit, "
        "write with a darker pen, or photograph it in even light"
    )


def _already_mnist_form(grey: np.ndarray) -> bool:
    """A 28x28 image that is already white ink on a mostly black background, dark along the
    edges (an MNIST image, or one this function made): taken as it is."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return (float(border.mean()) < 0.05 and float(grey.mean()) < 0.35
            and float(grey.max()) - float(grey.min()) >= _MIN_CONTRAST)


def _already_mnist_form_8bit(image: Image.Image, raw: bytes) -> bool:
    """:func:`_already_mnist_form` for a 28x28 8-bit greyscale ``image`` whose bytes are
    ``raw``, without numpy: a service's common case, where a handful of numpy calls on 784
    pixels cost more than the whole check (Pillow's extrema, sums over bytes)."""
    # Pillow types getextrema() for every mode at once; an 8-bit single band gives (min, max)
    low, high = cast(tuple[int, int], image.getextrema())
    if high - low < _MIN_CONTRAST * 255:
        return False
    border = raw[:28] + raw[-28:] + raw[::28] + raw[27::28]
    return sum(border) < 0.05 * 255 * len(border) and sum(raw) < 0.35 * 255 * len(raw)


def to_mnist_form(image: Image.Image | np.ndarray, *, copy: bool = True) -> np.ndarray:
    """Convert one digit image (any size, dark-on-light or light-on-dark) to MNIST form.

    Args:
        image: a PIL image (any mode) or an array ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``,
            uint8 on 0..255 or float on [0, 1].

    Returns:
        uint8 ``(28, 28)``: white ink on black, fitted to 20x20 and centred by mass
        (read-only when ``copy=False`` and the image was already in that form).

    Raises:
        DataError: the input is not an image, or no ink stands out from the background.
    """
    if (isinstance(image, Image.Image) and image.mode == "L" and image.size == (28, 28)
            and "transparency" not in image.info):
        raw = image.tobytes()  # the common case of a service: an MNIST-form 8-bit PNG
        if _already_mnist_form_8bit(image, raw):
            # what the float path below returns for it, without the floats
            arr = np.frombuffer(raw, dtype=np.uint8).reshape(28, 28)
            return arr.copy() if copy else arr
    grey = _greyscale(_as_float(image))
    h, w = grey.shape
    if (h, w) == (28, 28) and _already_mnist_form(grey):
        return (grey * 255).round().clip(0, 255).astype(np.uint8)
    # Work at a size where strokes are several pixels wide (speck removal relies on it) and
    # photos are not needlessly large.
    f = min(_WORK_SIDE, max(_MIN_SIDE, max(h, w))) / max(h, w)
    if f != 1.0:
        h, w = max(1, round(h * f)), max(1, round(w * f))
        grey = _resize(grey, h, w, Image.Resampling.BOX if f < 1 else Image.Resampling.BILINEAR)
    low, high = float(grey.min()), float(grey.max())  # a small digit is only a few pixels
    if high - low < _MIN_CONTRAST:
        raise _no_ink(f"pixel values span only {high - low:.3f}")

    # Paper is what touches the border; make the ink the bright part.
    edge = max(1, round(0.05 * min(h, w)))
    border = np.concatenate(
        [grey[:edge].ravel(), grey[-edge:].ravel(), grey[:, :edge].ravel(), grey[:, -edge:].ravel()]
    )
    if np.median(border) > (low + high) / 2:
        grey = 1.0 - grey

    # Uneven lighting: subtract a smooth surface fitted to the paper. (A grey opening was
    # tried first; it ate the strokes of bold digits, which a quadratic surface cannot.)
    residual = grey - _paper_surface(grey)
    signal = np.clip(residual, 0.0, 1.0)

    # Noise floor from the median and MAD of the paper's pixels (those below Otsu's
    # threshold), taken before clipping: clipping would zero half the paper and hide its
    # noise. All pixels would do while the ink is a small minority, but a tightly cropped
    # digit is mostly ink, and its spread would be taken for noise and the digit for blank.
    otsu = _otsu(signal)
    paper = residual[signal <= otsu]
    paper = paper if paper.size >= 0.05 * residual.size else residual
    median = float(np.median(paper))
    noise = 1.4826 * float(np.median(np.abs(paper - median)))
    floor = median + 3 * noise
    threshold = max(otsu, floor)
    mask = _median3_mask(signal > threshold)
    if not mask.any():
        raise _no_ink("nothing above the background but isolated specks")
    full = float(np.percentile(signal[mask], 90))  # the level of solid ink
    if full - median < max(_MIN_CONTRAST, 6 * noise):
        raise _no_ink(f"the brightest strokes stand {full - median:.3f} above the background")

    # Soft intensities keep the antialiased stroke edges; far from any stroke they are 0.
    support = _dilate(mask, max(1, round(0.02 * max(h, w))))
    ink = np.clip((signal - floor) / (full - floor), 0.0, 1.0) * support
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

    # Fit into 20x20 keeping the aspect ratio, as MNIST was made.
    ch, cw = ink.shape
    f = 20.0 / max(ch, cw)
    th, tw = max(1, round(ch * f)), max(1, round(cw * f))
    digit = np.clip(_resize(ink, th, tw, Image.Resampling.LANCZOS), 0.0, 1.0)
    if digit.sum() <= 0:
        raise _no_ink("the ink vanished when scaled to 20x20")

    # Paste so that the centre of mass lands on pixel (14, 14), staying inside the field.
    mass = digit.sum()
    cy = float((digit.sum(axis=1) * np.arange(th)).sum() / mass)
    cx = float((digit.sum(axis=0) * np.arange(tw)).sum() / mass)
    top = min(max(round(14 - cy), 0), 28 - th)
    left = min(max(round(14 - cx), 0), 28 - tw)
    out = np.zeros((28, 28), dtype=np.uint8)
    out[top : top + th, left : left + tw] = np.round(digit * 255).astype(np.uint8)
    return out
