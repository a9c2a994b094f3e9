"""Out of distribution: how well the prediction's confidence tells digits from inputs that are
not digits, and the threshold of the ``ood`` flag (:mod:`cnnlab.inference.ood`).

Every input, digit or not, is a user's page read through the checkpoint's
:class:`~cnnlab.inference.Preprocess`, as ``predict`` reads it. Digits: MNIST test drawn as
dark ink on paper (the shifts' severity-0 pages). Non-digits, generated here:

- ``letters``: capitals and small letters that no digit resembles, rendered from the TrueType
  fonts Debian ships (DejaVu, Liberation) at random sizes and positions;
- ``photos``: 96x96 patches of the photos in ``skimage.data``, in grey;
- ``noise``: uniform and Gaussian noise pages;
- ``blank``: plain pages of a random grey;
- ``near_blank``: paper with a smudge or a few specks.

A page the preprocessing refuses (it finds no ink: most blank pages) gets no prediction from
``predict``; here it counts as detected (the lowest score). AUROC is that of telling MNIST
from each set, and from all of them, by ``confidence`` (max softmax) and by ``-energy``.

The threshold: the ``rate`` quantile (1 % by default) of the confidence on the run's
validation split, so the flag marks that share of validation digits; written to ``ood.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnnlab.errors import ConfigError, DataError
from cnnlab.inference.ood import OOD_FILE, confidence_energy

__all__ = ["FONT_DIRS", "OOD_SETS", "choose_threshold", "non_digit_pages", "ood_scores",
           "run_ood", "write_ood_file"]

log = logging.getLogger("cnnlab")

OOD_SETS = ("letters", "photos", "noise", "blank", "near_blank")
FONT_DIRS = ("/usr/share/fonts/truetype", "/usr/share/fonts")
# letters that read as digits (O 0, I l 1, Z z 2, S s 5, b G 6, T 7, B 8, g q 9): left out
LETTERS = "ACDEFHJKLMNPRUVWXYacdefhkmnprtuvwxy"
PAGE = 96


def _fonts() -> list[Path]:
    for root in FONT_DIRS:
        found = sorted(p for p in Path(root).rglob("*.ttf")
                       if "Math" not in p.name) if Path(root).is_dir() else []
        if found:
            return found
    return []


def _letters(n: int, rng: np.random.Generator) -> list[Image.Image]:
    fonts = _fonts()
    if not fonts:
        raise DataError(f"no TrueType fonts under {', '.join(FONT_DIRS)} to render letters "
                        "from; install fonts-dejavu-core, or leave the letters out")
    pages = []
    for _ in range(n):
        size = int(rng.integers(40, 72))
        font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), size)
        page = Image.new("L", (PAGE, PAGE), int(rng.integers(200, 245)))
        draw = ImageDraw.Draw(page)
        letter = LETTERS[int(rng.integers(len(LETTERS)))]
        left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
        x = int(rng.integers(0, max(1, PAGE - int(right - left)))) - int(left)
        y = int(rng.integers(0, max(1, PAGE - int(bottom - top)))) - int(top)
        draw.text((x, y), letter, fill=int(rng.integers(0, 60)), font=font)
        pages.append(page)
    return pages


def _photos(n: int, rng: np.random.Generator) -> list[Image.Image]:
    from skimage import data

    names = ("camera", "astronaut", "coffee", "chelsea", "rocket", "coins", "moon", "page",
             "text", "brick", "grass", "gravel", "rough_wall", "immunohistochemistry")
    photos = []
    for name in names:
        try:
            arr = np.asarray(getattr(data, name)())
        except Exception:
            continue
        pil = Image.fromarray(arr).convert("L")
        if min(pil.size) >= PAGE:
            photos.append(pil)
    if not photos:
        raise DataError("scikit-image's data module has none of its photos here; reinstall "
                        "scikit-image")
    pages = []
    for _ in range(n):
        photo = photos[int(rng.integers(len(photos)))]
        side = int(rng.integers(PAGE, min(photo.size) + 1))
        x = int(rng.integers(0, photo.size[0] - side + 1))
        y = int(rng.integers(0, photo.size[1] - side + 1))
        pages.append(photo.crop((x, y, x + side, y + side)).resize((PAGE, PAGE)))
    return pages


def _noise(n: int, rng: np.random.Generator) -> list[Image.Image]:
    pages = []
    for i in range(n):
        if i % 2:
            arr = rng.uniform(0, 255, size=(PAGE, PAGE))
        else:
            arr = rng.normal(rng.uniform(60, 200), rng.uniform(20, 70), size=(PAGE, PAGE))
        pages.append(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L"))
    return pages


def _blank(n: int, rng: np.random.Generator) -> list[Image.Image]:
    return [Image.new("L", (PAGE, PAGE), int(rng.integers(0, 256))) for _ in range(n)]


def _near_blank(n: int, rng: np.random.Generator) -> list[Image.Image]:
    from skimage.filters import gaussian

    pages = []
    for i in range(n):
        paper = rng.uniform(180, 245)
        arr = np.full((PAGE, PAGE), paper) + rng.normal(0, 2, size=(PAGE, PAGE))
        if i % 2:  # a smudge: a faint large blob
            blob = np.zeros((PAGE, PAGE))
            r, c = rng.integers(20, PAGE - 20, size=2)
            blob[r, c] = 1.0
            blob = gaussian(blob, sigma=rng.uniform(6, 14))
            arr -= rng.uniform(20, 60) * blob / blob.max()
        else:  # a few specks of dust
            for _ in range(int(rng.integers(2, 7))):
                r, c = rng.integers(0, PAGE - 2, size=2)
                arr[r:r + 2, c:c + 2] -= rng.uniform(60, 150)
        pages.append(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L"))
    return pages


_MAKERS: dict[str, Callable[[int, np.random.Generator], list[Image.Image]]] = {
    "letters": _letters, "photos": _photos, "noise": _noise, "blank": _blank,
    "near_blank": _near_blank}


def non_digit_pages(name: str, n: int, *, seed: int = 0) -> list[Image.Image]:
    """``n`` pages of the non-digit set ``name`` (see the module docstring), seeded.

    Raises:
        ConfigError: an unknown set. DataError: no fonts (letters) or photos installed.
    """
    if name not in _MAKERS:
        from cnnlab.errors import unknown_name

        raise ConfigError(unknown_name("out-of-distribution set", name, OOD_SETS))
    return _MAKERS[name](n, np.random.default_rng((seed, OOD_SETS.index(name))))


def ood_scores(model: Any, pages: Sequence[Image.Image], *, batch_size: int = 500
               ) -> tuple[np.ndarray, np.ndarray, int]:
    """``(confidence, energy, refused)`` for pages read through the model's preprocessing;
    a refused page (no ink) gets confidence 0 and energy +inf (it is detected)."""
    import torch

    inputs, where = [], []
    for i, page in enumerate(pages):
        try:
            inputs.append(model.preprocess(page))
            where.append(i)
        except DataError:
            continue
    confidence = np.zeros(len(pages))
    energy = np.full(len(pages), np.inf)
    if inputs:
        logits = model.logits(torch.from_numpy(np.stack(inputs)), batch_size=batch_size)
        conf, e = confidence_energy(logits.numpy())
        confidence[where], energy[where] = conf, e
    return confidence, energy, len(pages) - len(inputs)


def choose_threshold(confidence: np.ndarray, rate: float) -> float:
    """The confidence below which ``rate`` of these (validation) digits fall.

    Raises:
        ConfigError: ``rate`` not in (0, 0.5].
    """
    if not 0.0 < rate <= 0.5:
        raise ConfigError(f"the ood rate (the share of validation digits flagged) must be in "
                          f"(0, 0.5]; got {rate!r}")
    if not len(confidence):
        raise DataError("no validation images to choose the ood threshold on")
    return float(np.quantile(np.asarray(confidence, dtype=np.float64), rate))


def _auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    scores = np.concatenate([inside, outside])
    finite = scores[np.isfinite(scores)]
    floor = float(finite.min()) - 1.0 if len(finite) else -1.0
    scores = np.where(np.isfinite(scores), scores, floor)
    labels = np.concatenate([np.ones(len(inside)), np.zeros(len(outside))])
    return float(roc_auc_score(labels, scores))


def run_ood(model: Any, digit_pages: Sequence[Image.Image], val_inputs: Any, *,
            images: int = 200, sets: Sequence[str] = OOD_SETS, rate: float = 0.01,
            seed: int = 0, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """AUROC of digits against each non-digit set, and the ``ood`` threshold.

    Args:
        model: a loaded :class:`~cnnlab.inference.Model`.
        digit_pages: MNIST test digits drawn as pages (in distribution).
        val_inputs: uint8 model inputs of the validation split (choose the threshold).
        images: pages per non-digit set.
        rate: the share of validation digits the flag marks.

    Returns:
        ``{"threshold", "rate", "auroc": {"confidence": {set: ...}, "energy": {...}},
        "flagged": {set: share}, "refused": {set: count}, ...}``.
    """
    import torch

    val_logits = model.logits(torch.as_tensor(val_inputs), batch_size=500).numpy()
    val_conf, _ = confidence_energy(val_logits)
    threshold = choose_threshold(val_conf, rate)
    if progress is not None:
        progress(f"ood: {len(digit_pages)} digits")
    in_conf, in_energy, in_refused = ood_scores(model, digit_pages)
    out: dict[str, Any] = {
        "threshold": threshold, "score": "confidence", "rate": rate,
        "validation_images": len(val_conf), "digits": len(digit_pages),
        "digits_refused": in_refused,
        "digits_flagged": float((in_conf < threshold).mean()) if len(in_conf) else 0.0,
        "images_per_set": images, "auroc": {"confidence": {}, "energy": {}},
        "flagged": {}, "refused": {}}
    all_conf, all_energy = [], []
    for name in sets:
        if progress is not None:
            progress(f"ood: {images} {name} pages")
        conf, energy, refused = ood_scores(model, non_digit_pages(name, images, seed=seed))
        all_conf.append(conf)
        all_energy.append(energy)
        out["auroc"]["confidence"][name] = _auroc(in_conf, conf)
        out["auroc"]["energy"][name] = _auroc(-in_energy, -energy)
        out["flagged"][name] = float((conf < threshold).mean())
        out["refused"][name] = refused
    if all_conf:
        out["auroc"]["confidence"]["all"] = _auroc(in_conf, np.concatenate(all_conf))
        out["auroc"]["energy"]["all"] = _auroc(-in_energy, -np.concatenate(all_energy))
    return out


def write_ood_file(folder: str | Path, checkpoint: str | Path, result: dict[str, Any]) -> Path:
    """``ood.json`` in ``folder``: the threshold for the checkpoint (by its SHA-256), where
    :func:`cnnlab.inference.ood.read_ood_threshold` finds it when ``folder`` holds the
    checkpoint."""
    from cnnlab._io import atomic_write_text
    from cnnlab.inference.checkpoint import checkpoint_sha256

    record = {"threshold": result["threshold"], "score": "confidence", "rate": result["rate"],
              "checkpoint_sha256": checkpoint_sha256(Path(checkpoint)),
              "validation_images": result["validation_images"],
              "made_by": "cnnlab robustness --suite ood"}
    return atomic_write_text(Path(folder) / OOD_FILE, json.dumps(record, indent=2) + "\n")
