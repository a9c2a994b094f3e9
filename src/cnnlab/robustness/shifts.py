"""Real-world shifts: the ways scans and photos of digits differ from MNIST, at three
severities, each read the way ``cnnlab predict`` reads a user's file.

Every shifted digit is drawn as a user's image: the MNIST digit enlarged three times (84x84),
changed by the shift, and put on paper as dark ink (paper 0.9, ink 0.1 unless the shift says
otherwise). That page goes through the checkpoint's :class:`~cnnlab.inference.Preprocess`,
the one data path, so the accuracy is what ``predict`` would get on such files, and a page in
which the preprocessing finds no ink counts as an error (``predict`` refuses it).

Shifts (severity 1, 2, 3):

- ``thin`` / ``thick``: strokes eroded by a disk of radius 1, 2, 3 / dilated by 2, 4, 6 pixels
  (at 84x84; MNIST strokes are 6-9 pixels wide there);
- ``stretch``: the digit 1.4x, 1.8x, 2.5x as wide;
- ``slant``: sheared by 0.25, 0.5, 0.75 (right-leaning);
- ``low_contrast``: ink only 0.4, 0.2, 0.1 darker than the paper;
- ``jpeg``: the page saved as JPEG at quality 20, 10, 5;
- ``lighting``: a lamp's gradient across the page (0.3, 0.5, 0.7 of the paper's brightness)
  with paper texture (noise of 0.03, 0.06, 0.1);
- ``off_centre``: the digit in a corner of a page 2, 3, 4 times its size;
- ``cropped``: 10, 20, 30 % of the digit cut off by the page's edge (a random side);
- ``crossed_7`` / ``flagged_1``: the European styles MNIST rarely shows, on the 7s / 1s only:
  a bar across the 7's stem, a flag and a foot on the 1, 0.5, 0.7, 0.9 of the digit's width.

Severity 0 is the digit drawn on paper with no shift: how far the page itself costs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from cnnlab.errors import ConfigError, DataError, unknown_name

__all__ = ["SEVERITIES", "SHIFTS", "check_shifts", "render_page", "shifted_inputs"]

SEVERITIES = (1, 2, 3)
SCALE = 3  # the page draws the 28x28 digit at 84x84
PAPER, INK = 0.9, 0.1

_Shift = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def _enlarge(digit: np.ndarray) -> np.ndarray:
    """uint8 (28, 28) white-on-black -> float (84, 84) ink coverage on [0, 1]."""
    pil = Image.fromarray(np.ascontiguousarray(digit)).resize((28 * SCALE, 28 * SCALE),
                                                              Image.Resampling.BILINEAR)
    return np.asarray(pil, dtype=np.float64) / 255.0


def _page(ink: np.ndarray, paper: float = PAPER, ink_level: float = INK) -> np.ndarray:
    """Ink coverage -> a grey page on [0, 1]: dark ink on light paper."""
    return paper - (paper - ink_level) * np.clip(ink, 0.0, 1.0)


def _to_pil(page: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(page, 0, 1) * 255).round().astype(np.uint8), mode="L")


def _warp(ink: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``ink`` under the forward affine ``matrix`` about its centre, onto ``shape``."""
    from skimage.transform import AffineTransform, warp

    c_in = (np.array(ink.shape[::-1], dtype=np.float64) - 1) / 2
    c_out = (np.array(shape[::-1], dtype=np.float64) - 1) / 2
    forward = (AffineTransform(translation=c_out).params @ matrix
               @ AffineTransform(translation=-c_in).params)
    return np.asarray(warp(ink, AffineTransform(matrix=forward).inverse, output_shape=shape,
                           order=1, mode="constant", cval=0.0, preserve_range=True))


def _bbox(ink: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(ink > 0.3)
    if not len(rows):
        return 0, ink.shape[0], 0, ink.shape[1]
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


# --- each shift: (84, 84) ink coverage, severity, rng -> a page on [0, 1] --------------------

def _thin(ink: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from skimage.morphology import disk, erosion

    return _page(erosion(ink, disk(severity)))


def _thick(ink: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from skimage.morphology import dilation, disk

    return _page(dilation(ink, disk(2 * severity)))


def _stretch(ink: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    f = (1.4, 1.8, 2.5)[severity - 1]
    shape = (ink.shape[0], round(ink.shape[1] * f))
    return _page(_warp(ink, np.diag([f, 1.0, 1.0]), shape))


def _slant(ink: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    s = (0.25, 0.5, 0.75)[severity - 1]
    shape = (ink.shape[0], round(ink.shape[1] * (1 + s)))
    return _page(_warp(ink, np.array([[1.0, -s, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
                       shape))


def _low_contrast(ink: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return _page(ink, PAPER, PAPER - (0.4, 0.2, 0.1)[severity - 1])


def _jpeg(ink: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    import io

    buffer = io.BytesIO()
    _to_pil(_page(ink)).save(buffer, format="JPEG", quality=(20, 10, 5)[severity - 1])
    return np.asarray(Image.open(buffer).convert("L"), dtype=np.float64) / 255.0


def _lighting(ink: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    h, w = ink.shape
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-12)
    light = 1.0 - (0.3, 0.5, 0.7)[severity - 1] * ramp  # a lamp on one side
    texture = rng.normal(0.0, (0.03, 0.06, 0.1)[severity - 1], size=(h, w))
    return _page(ink) * light + texture


def _off_centre(ink: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    h, w = ink.shape
    side = (severity + 1) * h
    big = np.zeros((side, side))
    r = 0 if rng.random() < 0.5 else side - h
    c = 0 if rng.random() < 0.5 else side - w
    big[r:r + h, c:c + w] = ink
    return _page(big)


def _cropped(ink: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    top, bottom, left, right = _bbox(ink)
    cut = (0.1, 0.2, 0.3)[severity - 1]
    side = int(rng.integers(0, 4))
    if side == 0:
        page = ink[top + round(cut * (bottom - top)):]
    elif side == 1:
        page = ink[:bottom - round(cut * (bottom - top))]
    elif side == 2:
        page = ink[:, left + round(cut * (right - left)):]
    else:
        page = ink[:, :right - round(cut * (right - left))]
    return _page(page)


def _bar(ink: np.ndarray, row: int, c0: int, c1: int, thickness: int = 5) -> np.ndarray:
    out = ink.copy()
    r0 = max(0, row - thickness // 2)
    out[r0:r0 + thickness, max(0, c0):max(0, c1)] = 1.0
    return out


def _crossed_7(ink: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    top, bottom, left, right = _bbox(ink)
    row = (top + bottom) // 2
    cols = np.nonzero(ink[row] > 0.3)[0]
    centre = int(cols.mean()) if len(cols) else (left + right) // 2
    half = round((0.5, 0.7, 0.9)[severity - 1] * (right - left) / 2)
    return _page(_bar(ink, row, centre - half, centre + half))


def _flagged_1(ink: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from skimage.draw import line

    top, bottom, left, right = _bbox(ink)
    width = max(right - left, (bottom - top) // 3)  # a 1 is narrow: size it by its height
    frac = (0.5, 0.7, 0.9)[severity - 1]
    top_cols = np.nonzero(ink[top + 2] > 0.3)[0]
    tip = int(top_cols.mean()) if len(top_cols) else (left + right) // 2
    bottom_cols = np.nonzero(ink[bottom - 3] > 0.3)[0]
    base = int(bottom_cols.mean()) if len(bottom_cols) else tip
    out = ink.copy()
    length = round(frac * width)
    rr, cc = line(top + 1, tip, min(ink.shape[0] - 1, top + 1 + length // 2),
                  max(0, tip - length))
    for d in range(-2, 3):  # a stroke about as wide as the digit's
        out[np.clip(rr + d, 0, ink.shape[0] - 1), cc] = 1.0
    half = length // 2
    out = _bar(out, bottom - 3, base - half, base + half + 1)
    return _page(out)


_SHIFTS: dict[str, _Shift] = {
    "thin": _thin, "thick": _thick, "stretch": _stretch, "slant": _slant,
    "low_contrast": _low_contrast, "jpeg": _jpeg, "lighting": _lighting,
    "off_centre": _off_centre, "cropped": _cropped, "crossed_7": _crossed_7,
    "flagged_1": _flagged_1,
}
SHIFTS = tuple(_SHIFTS)
#: shifts that apply only to one class's digits (a style of that digit)
STYLE_CLASS = {"crossed_7": 7, "flagged_1": 1}


def check_shifts(names: Sequence[str]) -> list[str]:
    """``names`` when every one is a shift.

    Raises:
        ConfigError: an unknown name, with the closest known ones.
    """
    for name in names:
        if name not in _SHIFTS:
            raise ConfigError(unknown_name("shift", name, SHIFTS))
    return list(names)


def render_page(digit: np.ndarray, shift: str | None = None, severity: int = 0, *,
                seed: int = 0, index: int = 0) -> Image.Image:
    """One MNIST-form digit (uint8 ``(28, 28)``) as a user's greyscale page, under ``shift``
    at ``severity`` (None or severity 0: the page without a shift).

    Raises:
        ConfigError: an unknown shift, or a severity other than 0-3.
    """
    if severity not in (0, *SEVERITIES):
        raise ConfigError(f"a shift severity is 0, 1, 2 or 3; got {severity!r}")
    ink = _enlarge(digit)
    if shift is None or severity == 0:
        return _to_pil(_page(ink))
    check_shifts([shift])
    rng = np.random.default_rng((seed, SHIFTS.index(shift), severity, index))
    return _to_pil(_SHIFTS[shift](ink, severity, rng))


def shifted_inputs(digits: np.ndarray, targets: np.ndarray, preprocess: Callable[
        [Image.Image], np.ndarray], shift: str | None, severity: int, *, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The digits (uint8 ``(N, 28, 28)``) drawn under a shift and read through ``preprocess``.

    Style shifts take only their class's digits.

    Returns:
        ``(inputs, targets, refused)``: uint8 model inputs ``(M, C, H, W)`` of the pages the
        preprocessing read, their targets, and the targets of the pages it refused (no ink).
    """
    keep = np.arange(len(digits))
    if shift in STYLE_CLASS:
        keep = keep[np.asarray(targets) == STYLE_CLASS[shift]]
    inputs, kept, refused = [], [], []
    for i in keep:
        page = render_page(digits[i], shift, severity, seed=seed, index=int(i))
        try:
            inputs.append(preprocess(page))
            kept.append(int(targets[i]))
        except DataError:
            refused.append(int(targets[i]))
    stacked = np.stack(inputs) if inputs else np.zeros((0, 1, 28, 28), np.uint8)
    return stacked, np.asarray(kept, np.int64), np.asarray(refused, np.int64)
