"""Image folders as training data: the input size and preprocessing a folder trains with,
seeded stratified splits of its files, and the split manifest (``splits.json``) that lists
every split's files with their SHA-256 (:mod:`cnnlab.training.data` uses these)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.config import DataConfig
from cnnlab.data import FolderListing, probe_images, stratified_split
from cnnlab.errors import DataError
from cnnlab.inference.preprocess import Preprocess, digit_likeness

__all__ = ["MANIFEST_FORMAT", "MANIFEST_NAME", "MAX_AUTO_SIDE", "folder_manifest",
           "manifest_split", "preprocess_for_folder", "split_folder", "split_parent",
           "suggest_digit_preprocess"]

log = logging.getLogger("cnnlab")

MANIFEST_NAME = "splits.json"
MANIFEST_FORMAT = "cnnlab-splits"
MAX_AUTO_SIDE = 224  # a folder of larger images trains at a size whose longer side is this


def _auto_size(listing: FolderListing) -> tuple[int, int]:
    sizes, _ = probe_images(listing, limit=2000)
    if not sizes:
        return (28, 28)
    (h, w), n = sizes.most_common(1)[0]
    total = sum(sizes.values())
    if max(h, w) > MAX_AUTO_SIDE:
        f = MAX_AUTO_SIDE / max(h, w)
        h2, w2 = max(1, round(h * f)), max(1, round(w * f))
        log.info("%s: images of %dx%d are trained at %dx%d (set data.image_size to choose)",
                 listing.root, h, w, h2, w2)
        return (h2, w2)
    if n < total:
        log.info("%s: images differ in size; all are resized to the most common, %dx%d (%d of "
                 "%d; set data.image_size to choose)", listing.root, h, w, n, total)
    return (h, w)


def preprocess_for_folder(listing: FolderListing, cfg: DataConfig) -> Preprocess:
    """The preprocessing a run from scratch on this folder trains with: ``cfg.preprocess``
    (``resize`` unless set), ``cfg.channels`` (else 1 when every image is greyscale, 3
    otherwise) and ``cfg.image_size`` (else the images' own size, see :data:`MAX_AUTO_SIDE`)."""
    kind = cfg.preprocess or "resize"
    _, gray = probe_images(listing, limit=2000)
    channels = cfg.channels or (1 if gray or kind == "mnist-digits" else 3)
    if cfg.image_size:
        size = (cfg.image_size, cfg.image_size)
    elif kind == "mnist-digits":
        size = (28, 28)
    else:
        size = _auto_size(listing)
    return Preprocess(kind, channels, size[0], size[1])


def suggest_digit_preprocess(listing: FolderListing, source_spec: Preprocess,
                             requested: str = "") -> Preprocess:
    """For a model that reads MNIST-form digits, the preprocessing a folder of its images
    should get: ``mnist-digits`` when the folder's images look like digits (greyscale
    strokes on a plain background), else ``resize`` at the same input shape, said in the log.

    Raises:
        ConfigError: ``requested`` is not a known kind.
    """
    if requested:
        return Preprocess(requested, source_spec.channels, source_spec.height,
                          source_spec.width)
    from cnnlab.data import read_image

    step = max(1, len(listing) // 40)
    sample = []
    for rel in listing.paths[::step][:40]:
        try:
            sample.append(read_image(listing.root / rel))
        except DataError:
            continue  # reported by name when the folder is read
    looks, why = digit_likeness(sample)
    if looks:
        return source_spec
    log.warning("%s does not look like digits on paper (%s): its images are resized to "
                "%dx%d instead of brought to MNIST form; set preprocess='mnist-digits' to "
                "insist", listing.root, why, source_spec.height, source_spec.width)
    return Preprocess("resize", source_spec.channels, source_spec.height, source_spec.width)


def split_folder(listing: FolderListing, fraction: float, seed: int,
                 what: str) -> tuple[FolderListing, FolderListing]:
    """A seeded, stratified split of a folder's files: ``(rest, held_out)``.

    Raises:
        DataError: a class has fewer than 2 images, so it cannot be in both parts.
    """
    counts = np.bincount(listing.targets, minlength=len(listing.classes))
    short = [f"{c!r} ({int(n)})" for c, n in zip(listing.classes, counts, strict=True) if n < 2]
    if short:
        raise DataError(f"{listing.root}: a {what} split needs at least 2 images in every class, "
                        f"but {', '.join(short)} has fewer; add images, or give the split its "
                        f"own folder ({listing.root}/train and {listing.root}/test)")
    rest, held = stratified_split(np.asarray(listing.targets), fraction, seed)
    return listing.subset(rest), listing.subset(held)


def manifest_split(listing: FolderListing, digests: list[str]) -> dict[str, Any]:
    """A folder split's manifest entry: its root and every file's relative path, SHA-256 and
    class."""
    return {"root": str(listing.root.resolve()),
            "files": [{"path": p, "sha256": d, "class": listing.classes[t]}
                      for p, d, t in zip(listing.paths, digests, listing.targets, strict=True)]}


def folder_manifest(dataset: str, seed: int, pre: Preprocess,
                    splits: dict[str, tuple[FolderListing, list[str]]]) -> dict[str, Any]:
    """The ``splits.json`` of a folder run."""
    return {"format": MANIFEST_FORMAT, "version": 1, "dataset": str(dataset),
            "root": str(Path(dataset).resolve()), "seed": seed,
            "preprocessing": pre.to_spec(),
            "splits": {name: manifest_split(listing, digests)
                       for name, (listing, digests) in splits.items()}}


def split_parent(p: Path) -> Path:
    """The dataset folder of ``p``: its parent when ``p`` is a train/, val/ or test/ folder."""
    return p.parent if p.name in ("train", "test", "val") else p


