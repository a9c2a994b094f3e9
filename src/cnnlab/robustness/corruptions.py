"""MNIST-C: the 15 corruptions of Mu & Gilmer (2019), ported to numpy and scikit-image, made
from MNIST test and cached as IDX files with checksums.

Each corruption maps one MNIST-form digit (float ``(28, 28)`` on [0, 1], white ink on black)
to its corrupted form, drawing its randomness from a generator seeded by ``(seed, corruption,
image index)``: the same seed gives the same images, and the first ``n`` images of a larger
cache are the ``n`` images a smaller run would make. The original code needs ImageMagick's
Wand only for motion blur; here that is a convolution with a line kernel whose weights fall
off along the line as Wand's do. The parameters are one severity per corruption, chosen in
the values of the paper's release (each corruption's default severity there).

Cache: ``<cache>/mnist-c/v<VERSION>-<code>-seed<seed>/<name>.idx.gz`` (uint8 ``(N, 28, 28)``),
where ``<code>`` is a digest of this module's source and of the numpy, scipy and scikit-image
versions that made the images (so a cache written by other code is never read as this code's
output, even where VERSION was not bumped), with
``checksums.json`` beside them (the SHA-256 of each file's uncompressed data, its image
count and the SHA-256 of the MNIST test images it was made from). A file whose checksum does
not match is made again, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cnnlab.errors import ConfigError, unknown_name

__all__ = ["CORRUPTIONS", "VERSION", "check_corruptions", "code_digest", "corrupt",
           "corrupt_images", "mnist_c"]

log = logging.getLogger("cnnlab")

VERSION = 2  # bump when a corruption changes (2: fog, zigzag, dotted line as MNIST-C makes them)


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    from skimage.filters import gaussian

    return np.asarray(gaussian(x, sigma=sigma, mode="constant", preserve_range=True))


def _warp_about_centre(x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``x`` under the affine ``matrix`` (3x3, forward map) about the image centre."""
    from skimage.transform import AffineTransform, warp

    c = (np.array(x.shape[::-1], dtype=np.float64) - 1) / 2  # (x, y) of the centre
    to_centre = AffineTransform(translation=-c)
    back = AffineTransform(translation=c)
    forward = back.params @ matrix @ to_centre.params
    return np.asarray(warp(x, AffineTransform(matrix=forward).inverse, order=1, mode="constant",
                           cval=0.0, preserve_range=True))


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


# --- the 15 corruptions: (28, 28) float on [0, 1] -> the same --------------------------------
# Each at the one severity MNIST-C uses (its code's default severity for the corruption).

def shot_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise: photon counts of 3 per unit of brightness."""
    return rng.poisson(x * 3.0) / 3.0


def impulse_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper on 17 % of the pixels."""
    from skimage.util import random_noise

    return np.asarray(random_noise(x, mode="s&p", amount=0.17, rng=rng))


def glass_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur (sigma 0.7), move pixels' values from a random neighbour (twice), blur again:
    frosted glass. (The original swaps pixels one by one in a Python loop, 30 ms an image
    here; this gathers them at once, half of the pixels per pass as there.)"""
    y = _gaussian(x, 0.7)
    h, w = y.shape
    rows, cols = np.mgrid[0:h, 0:w]
    for _ in range(2):
        dr, dc = rng.integers(-1, 2, size=(2, h, w)) * (rng.random((h, w)) < 0.5)
        y = y[np.clip(rows + dr, 0, h - 1), np.clip(cols + dc, 0, w - 1)]
    return _gaussian(y, 0.7)


def motion_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A camera moving along a random direction (within 45 degrees of horizontal): the image
    convolved with a one-sided line kernel of length 10 pixels, Gaussian weights (sigma 3)
    along it, as ImageMagick's motion blur (radius 10, sigma 3)."""
    from scipy.ndimage import convolve
    from skimage.draw import line_aa

    length, sigma = 10, 3.0
    angle = np.deg2rad(rng.uniform(-45, 45))
    size = 2 * length + 1
    kernel = np.zeros((size, size))
    r, c, value = line_aa(length, length, length + round(length * np.sin(angle)),
                          length + round(length * np.cos(angle)))
    distance = np.hypot(r - length, c - length)
    kernel[r, c] = value * np.exp(-distance**2 / (2 * sigma**2))
    return np.asarray(convolve(x, kernel / kernel.sum(), mode="constant", cval=0.0))


def _affine(**params: float) -> np.ndarray:
    from skimage.transform import AffineTransform

    return np.asarray(AffineTransform(**params).params)


def shear(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sheared by 0.4 (scikit-image's shear angle), either way."""
    return _warp_about_centre(x, _affine(shear=_sign(rng) * 0.4))


def scale(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Zoomed out to 70 % of the size."""
    return _warp_about_centre(x, np.diag([0.7, 0.7, 1.0]))


def rotate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotated by 0.4 radians (23 degrees), either way."""
    return _warp_about_centre(x, _affine(rotation=_sign(rng) * 0.4))


def brightness(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every pixel 0.5 brighter (the value channel of HSV, for a grey image)."""
    return x + 0.5


def translate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Moved 3 pixels along each axis, each either way."""
    dy, dx = (int(_sign(rng) * 3) for _ in range(2))
    out = np.zeros_like(x)
    h, w = x.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def stripe(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The left and right quarters (7 columns each) inverted."""
    out = x.copy()
    out[:, :7] = 1.0 - out[:, :7]
    out[:, 21:] = 1.0 - out[:, 21:]
    return out


def _fractal_noise(rng: np.random.Generator, shape: tuple[int, int] = (28, 28),
                   decay: float = 1.4, size: int = 256) -> np.ndarray:
    """Plasma-like noise as MNIST-C's fog takes it: a ``size`` x ``size`` map normalised to
    [0, 1] over the whole map, of which the top-left ``shape`` is returned, so the
    fog over a digit is a smooth part of a larger cloud (range about 0.3, not 0 to 1). The map
    sums random grids of 2 to ``size`` cells, bilinearly upsampled, each octave ``decay``
    squared times weaker than the last: the diamond-square plasma's random offsets are the
    wibble times a uniform in [-wibble, wibble], so ``wibbledecay`` enters squared. (Checked
    against a diamond-square map of the same decay: crop range 0.25 against 0.29, mean
    pixel-to-pixel step 0.008 against 0.008.)"""
    from skimage.transform import resize

    total = np.zeros((size, size))
    for k in range(1, int(np.log2(size)) + 1):
        cells = 2**k
        total += (decay * decay) ** -k * resize(rng.uniform(-1, 1, (cells, cells)),
                                                (size, size), order=1, mode="reflect")
    total -= total.min()
    return total[:shape[0], :shape[1]] / max(float(total.max()), 1e-12)


def fog(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fractal fog of strength 3 (wibble decay 1.4) added and the contrast brought down, as
    ImageNet-C's fog at severity 5, MNIST-C's default."""
    strength = 3.0
    peak = float(x.max())
    return (x + strength * _fractal_noise(rng, x.shape)) * peak / (peak + strength)


def spatter(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mud: where smoothed noise (mean 0.65, sd 0.3, blur 1) is above 0.65, a blurred
    (sigma 1.5) mask above 0.8 covers the image in dark grey (63/255)."""
    liquid = _gaussian(rng.normal(0.65, 0.3, size=x.shape), 1.0)
    mask = _gaussian((liquid > 0.65).astype(np.float64), 1.5)
    mask[mask < 0.8] = 0.0
    return x * (1 - mask) + 63 / 255 * mask


def _column_line(r0: float, c0: float, r1: float, c1: float, n: int = 28) -> np.ndarray:
    """A line from (r0, c0) to (r1, c1), ``c0 < c1``, drawn as MNIST-C draws its lines: in
    each column from ``floor(c0)`` to ``ceil(c1)`` the vertical distance d to the line gives
    the brightness ``log(1 - d / 2.3) + 1`` (so a band about 1.45 pixels each side, measured
    along the column, whatever the slope)."""
    if c1 <= c0:
        return np.zeros((n, n))
    rr, cc = np.mgrid[0:n, 0:n].astype(np.float64)
    row = r0 + (r1 - r0) / (c1 - c0) * (cc - c0)
    distance = np.clip(np.abs(rr - row), 0, 2.3 - 1e-9)
    out = np.clip(np.log(1 - distance / 2.3) + 1, 0.0, 1.0)
    out[:, :max(int(np.floor(c0)), 0)] = 0.0
    out[:, max(int(np.ceil(c1)), 0):] = 0.0
    return out


def dotted_line(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A dashed line from the left edge to the right, 2 columns off, 2 on."""
    r0, r1 = (float(v) for v in rng.integers(0, 27, size=2))
    line = _column_line(r0, 0.0, r1, 27.0)
    line[:, (np.arange(28) // 2) % 2 == 0] = 0.0
    return x + line


def zigzag(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A zigzag along a random line from column 2 to 25 (its end row within 5 of its start):
    peaks 2 pixels either side of the line, 4 pixels apart along it, joined by straight
    strokes (slope 1 before the line is tilted), as MNIST-C's."""
    r0 = float(rng.integers(0, 27))
    r1 = r0 + float(rng.integers(-5, 5))
    half, height = 2.0, 2.0  # a tooth's half-length along the line, its height across it
    theta = np.arctan2(r1 - r0, 23.0)
    length = 23.0 / np.cos(theta)
    teeth = int((length - half) // (2 * half)) + 1
    along = [0.0] + [(2 * i + 1) * half for i in range(teeth)]
    across = [0.0] + [height * (-1.0) ** i for i in range(teeth)]
    whole = 2 * half * (length // (2 * half))
    if length != whole:  # the last stroke ends on the line's end, nearly on the line
        along.append(length)
        across.append(across[-1] / (2 * (length - whole)))
    a, c = np.asarray(along), np.asarray(across)
    cols = 2.0 + a * np.cos(theta) - c * np.sin(theta)
    rows = r0 + a * np.sin(theta) + c * np.cos(theta)
    out = x.copy()
    for i in range(1, len(a)):
        out = np.clip(out + _column_line(rows[i - 1], cols[i - 1], rows[i], cols[i]), 0, 1)
    return out


def canny_edges(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Only the edges of the strokes (Canny, sigma 1)."""
    from skimage.feature import canny

    return canny(x, sigma=1.0).astype(np.float64)


_FUNCTIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "shot_noise": shot_noise, "impulse_noise": impulse_noise, "glass_blur": glass_blur,
    "motion_blur": motion_blur, "shear": shear, "scale": scale, "rotate": rotate,
    "brightness": brightness, "translate": translate, "stripe": stripe, "fog": fog,
    "spatter": spatter, "dotted_line": dotted_line, "zigzag": zigzag,
    "canny_edges": canny_edges,
}
#: the corruption names, in the paper's order
CORRUPTIONS = tuple(_FUNCTIONS)


def check_corruptions(names: Sequence[str]) -> list[str]:
    """``names`` when every one is a corruption.

    Raises:
        ConfigError: an unknown name, with the closest known ones.
    """
    for name in names:
        if name not in _FUNCTIONS:
            raise ConfigError(unknown_name("corruption", name, CORRUPTIONS))
    return list(names)


def corrupt(name: str, digit: np.ndarray, seed: int = 0, index: int = 0) -> np.ndarray:
    """One uint8 ``(28, 28)`` MNIST-form digit under corruption ``name`` (uint8 again).

    Raises:
        ConfigError: an unknown corruption.
    """
    check_corruptions([name])
    rng = np.random.default_rng((seed, CORRUPTIONS.index(name), index))
    out = _FUNCTIONS[name](np.asarray(digit, dtype=np.float64) / 255.0, rng)
    return (np.clip(out, 0.0, 1.0) * 255).round().astype(np.uint8)


def corrupt_images(name: str, digits: np.ndarray, seed: int = 0, start: int = 0) -> np.ndarray:
    """uint8 ``(N, 28, 28)`` digits under corruption ``name``; image ``i`` is seeded by its
    index ``start + i``, so a longer run starts with the same images."""
    return np.stack([corrupt(name, d, seed, start + i) for i, d in enumerate(digits)]) \
        if len(digits) else np.zeros((0, 28, 28), np.uint8)


def code_digest() -> str:
    """12 hex digits that change with this module's source and the versions of numpy, scipy
    and scikit-image: the cache folder's name holds them."""
    from importlib.metadata import PackageNotFoundError, version

    h = hashlib.sha256(Path(__file__).read_bytes())
    for package in ("numpy", "scipy", "scikit-image"):
        try:
            h.update(f"{package}=={version(package)}".encode())
        except PackageNotFoundError:
            h.update(f"{package} absent".encode())
    return h.hexdigest()[:12]


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def mnist_c(digits: np.ndarray, names: Sequence[str] = CORRUPTIONS, *, seed: int = 0,
            cache_dir: str | Path | None = None,
            progress: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """The digits (uint8 ``(N, 28, 28)``, MNIST test in order) under each corruption, from the
    cache when it holds them, else made and cached.

    The cache keeps the clean digits it was made from (``clean.idx.gz``): a run whose digits
    start that file is served from it (image ``i`` of a cache is made from image ``i``); other
    digits make the corruptions again.

    Args:
        digits: the clean digits.
        names: which corruptions.
        seed: the seed of every corruption's randomness.
        cache_dir: the cache root (``mnist-c/`` goes under it); default
            :func:`cnnlab.data.default_cache_dir`.
        progress: called with a corruption's name before it is made (not when it is read).

    Raises:
        ConfigError: an unknown corruption name.
    """
    from cnnlab._io import atomic_write_text
    from cnnlab.data import default_cache_dir

    check_corruptions(names)
    digits = np.asarray(digits, dtype=np.uint8).reshape(-1, 28, 28)
    n = len(digits)
    folder = (Path(cache_dir or default_cache_dir()) / "mnist-c"
              / f"v{VERSION}-{code_digest()}-seed{seed}")
    sums_path = folder / "checksums.json"
    try:
        sums = json.loads(sums_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        sums = {}
    clean = _read_checked(folder / "clean.idx.gz", sums.get("clean", {}))
    same_source = clean is not None and len(clean) >= n and np.array_equal(clean[:n], digits)
    if not same_source:
        sums = {}
    out: dict[str, np.ndarray] = {}
    for name in names:
        entry = sums.get(name, {})
        cached = _read_checked(folder / f"{name}.idx.gz", entry) if same_source else None
        if cached is not None and len(cached) >= n:
            out[name] = cached[:n]
            continue
        if progress is not None:
            progress(name)
        out[name] = corrupt_images(name, digits, seed)
        if _write_checked(folder / f"{name}.idx.gz", out[name], sums, name) and not same_source:
            same_source = _write_checked(folder / "clean.idx.gz", digits, sums, "clean")
        try:
            atomic_write_text(sums_path, json.dumps(sums, indent=1, sort_keys=True) + "\n")
        except OSError as e:
            log.warning("mnist-c: cannot write %s (%s)", sums_path, e)
    return out


def _read_checked(path: Path, entry: dict[str, object]) -> np.ndarray | None:
    """The IDX file at ``path`` when its data has the SHA-256 ``entry`` records, else None
    (with a warning for a file that is there but wrong)."""
    from cnnlab.data import read_idx
    from cnnlab.errors import DataError

    if not path.is_file() or "sha256" not in entry:
        return None
    try:
        data = read_idx(path)
    except (OSError, DataError) as e:
        log.warning("mnist-c: the cache file %s is unreadable (%s); making it again", path, e)
        return None
    if _sha256(data) != entry["sha256"]:
        log.warning("mnist-c: the cache file %s does not match its checksum; making it again",
                    path)
        return None
    return np.asarray(data)


def _write_checked(path: Path, data: np.ndarray, sums: dict[str, object], key: str) -> bool:
    from cnnlab.data import write_idx

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_idx(path, data)
    except OSError as e:
        log.warning("mnist-c: cannot cache %s (%s); it will be made again next time", path, e)
        return False
    sums[key] = {"images": len(data), "sha256": _sha256(data)}
    return True
