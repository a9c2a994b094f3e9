"""Turn a :class:`~cnnlab.config.DataConfig` into in-memory train/validation/test sets, and get
any split of a trained model's data back: :func:`prepare_data` and :func:`load_split`.

``data.dataset`` names a registered dataset (``mnist``, ``fashion-mnist``, ``kmnist``) or an
image folder. Folder images go through the run's :class:`~cnnlab.inference.Preprocess`, the
spec the checkpoint records, so that ``predict`` and ``serve`` later see every file as
training saw it.

Splits: training reads train; validation (held out of train) takes every decision; the test
split is read to report. A folder with ``train/`` and ``test/`` subfolders is split that way;
any other folder gets a seeded, stratified test split when training starts. Folder runs write
the split as a manifest (``splits.json``: relative path and SHA-256 of every file, per split)
into the run directory, and :func:`load_split` reads the same files back.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.config import DataConfig
from cnnlab.data import (
    DATASETS,
    IMAGE_EXTENSIONS,
    FolderListing,
    ImageDataset,
    list_image_folder,
    load_dataset,
    read_folder_images,
    stratified_split,
)
from cnnlab.errors import ConfigError, DataError, close_names
from cnnlab.inference.preprocess import Preprocess
from cnnlab.training.folders import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    folder_manifest,
    manifest_split,
    preprocess_for_folder,
    split_folder,
    split_parent,
    suggest_digit_preprocess,
)

__all__ = ["MANIFEST_NAME", "SPLITS", "PreparedData", "SplitSource", "check_split",
           "folder_manifest", "load_split", "manifest_split", "prepare_data",
           "preprocess_for_folder", "preprocessing_for", "read_manifest", "split_folder",
           "suggest_digit_preprocess"]

log = logging.getLogger("cnnlab")

# Datasets whose images follow MNIST's digit form; predict brings real-world images to it.
DIGIT_DATASETS = {"mnist"}
SPLITS = ("train", "val", "test")


@dataclass
class PreparedData:
    train: ImageDataset
    val: ImageDataset | None
    test: ImageDataset | None
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    preprocessing: dict[str, Any]
    manifest: dict[str, Any] | None = field(default=None)  # folders: the files of each split
    # per training image: its weight in the loss (group reweighting); None = all 1
    train_weights: torch.Tensor | None = field(default=None)

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return (int(self.train.images.shape[2]), int(self.train.images.shape[3]))


def preprocessing_for(dataset: str, channels: int, size: tuple[int, int]) -> dict[str, Any]:
    """The preprocessing spec of a registered dataset at this input shape."""
    kind = "mnist-digits" if dataset in DIGIT_DATASETS else "resize"
    return Preprocess(kind, channels, size[0], size[1]).to_spec()


def _prepare_folder(cfg: DataConfig, seed: int, progress: bool,
                    preprocess: Preprocess | None) -> PreparedData:
    root = Path(cfg.dataset)
    has_train = (root / "train").is_dir()
    full = list_image_folder(root / "train" if has_train else root)
    test_listing: FolderListing | None = None
    if has_train and (root / "test").is_dir():
        test_listing = list_image_folder(root / "test")
        if test_listing.classes != full.classes:
            raise DataError(f"{root / 'test'} has classes {test_listing.classes} but "
                            f"{root / 'train'} has {full.classes}; both splits need the same "
                            "class folders")
    else:
        full, test_listing = split_folder(full, cfg.test_fraction, seed, "test")
        log.info("%s has no test/ folder: %d of its %d images (stratified, seed %d) are held "
                 "out as the test split; splits.json in the run directory lists them",
                 root, len(test_listing), len(full) + len(test_listing), seed)
    if cfg.val_fraction > 0:
        train_l, val_l = split_folder(full, cfg.val_fraction, seed, "validation")
    else:
        train_l, val_l = full, None
    if cfg.limit and cfg.limit < len(train_l):
        keep, _ = stratified_split(np.asarray(train_l.targets), 1 - cfg.limit / len(train_l),
                                   seed)
        train_l = train_l.subset(keep)
    pre = preprocess or preprocess_for_folder(train_l, cfg)
    log.info("%s: %s", root, pre.describe())
    train, train_sha = read_folder_images(train_l, pre, progress=progress)
    parts = {"train": (train_l, train_sha)}
    val = None
    if val_l is not None:
        val, val_sha = read_folder_images(val_l, pre, progress=progress)
        parts["val"] = (val_l, val_sha)
    test, test_sha = read_folder_images(test_listing, pre, progress=progress)
    parts["test"] = (test_listing, test_sha)
    manifest = folder_manifest(cfg.dataset, seed, pre, parts)
    stats = train.stats()
    return PreparedData(
        train=train, val=val, test=test, classes=list(train_l.classes),
        mean=tuple(round(v, 4) for v in stats.mean),
        std=tuple(round(max(v, 1e-3), 4) for v in stats.std),
        preprocessing=pre.to_spec(), manifest=manifest)


# --- registered datasets ----------------------------------------------------------------------

def _records(ds: ImageDataset, pre: Preprocess) -> ImageDataset:
    images = pre.records(ds.images.numpy())
    if images is ds.images.numpy() or tuple(ds.images.shape[1:]) == pre.shape:
        return ds
    return ImageDataset(images=torch.from_numpy(np.ascontiguousarray(images)),
                        targets=ds.targets, classes=ds.classes, name=ds.name, source=ds.source)


def _registered_preprocess(cfg: DataConfig, records: ImageDataset) -> Preprocess:
    kind = cfg.preprocess or ("mnist-digits" if cfg.dataset in DIGIT_DATASETS else "resize")
    c, h, w = records.shape
    size = (cfg.image_size, cfg.image_size) if cfg.image_size else (h, w)
    return Preprocess(kind, cfg.channels or c, size[0], size[1])


def _prepare_registered(cfg: DataConfig, seed: int, progress: bool) -> PreparedData:
    data_dir = cfg.data_dir or None
    full = load_dataset(cfg.dataset, "train", data_dir=data_dir, progress=progress)
    test = load_dataset(cfg.dataset, "test", data_dir=data_dir, progress=progress)
    pre = _registered_preprocess(cfg, full)
    full, test = _records(full, pre), _records(test, pre)
    train_idx = np.arange(len(full))
    val_idx: np.ndarray | None = None
    if cfg.val_fraction > 0 and cfg.val_split == "writer":
        train_idx, val_idx = _writer_split(cfg, full, seed)
    elif cfg.val_fraction > 0:
        train_idx, val_idx = stratified_split(full.targets, cfg.val_fraction, seed)
    if cfg.limit and cfg.limit < len(train_idx):
        # a stratified subset: the classes keep their proportions
        keep, _ = stratified_split(full.targets[train_idx], 1 - cfg.limit / len(train_idx), seed)
        train_idx = train_idx[keep]
    train = full.subset(train_idx)
    val = full.subset(val_idx) if val_idx is not None else None
    stats = train.stats()
    splits: dict[str, Any] = {"train": {"file": "train", "indices": train_idx.tolist()},
                              "test": {"file": "test", "indices": "all"}}
    if val_idx is not None:
        splits["val"] = {"file": "train", "indices": val_idx.tolist(), "by": cfg.val_split}
    manifest = {"format": MANIFEST_FORMAT, "version": 1, "dataset": cfg.dataset, "seed": seed,
                "preprocessing": pre.to_spec(), "splits": splits}
    return PreparedData(
        train=train, val=val, test=test, classes=list(full.classes),
        mean=tuple(round(v, 4) for v in stats.mean),
        std=tuple(round(max(v, 1e-3), 4) for v in stats.std),
        preprocessing=pre.to_spec(), manifest=manifest)


def _writer_split(cfg: DataConfig, full: ImageDataset | None, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """data.val_split=writer: validation holds whole NIST writers (the QMNIST labels), as the
    test split shares no writer with training.

    Raises:
        ConfigError: data other than MNIST (no writer metadata).
    """
    from cnnlab.data.qmnist import load_writers, writer_disjoint_split

    if cfg.dataset != "mnist" or full is None:
        raise ConfigError(f"data.val_split=writer needs writer metadata, which only mnist has "
                          f"(the QMNIST labels); {cfg.dataset} has none: set "
                          "data.val_split=stratified")
    writers = load_writers("train", data_dir=cfg.data_dir or None)
    writers.check_targets(full.targets.numpy())
    train_idx, val_idx = writer_disjoint_split(writers.writer, cfg.val_fraction, seed)
    log.info("validation split by writer: %d of %d NIST writers (%d images) held out",
             len(np.unique(writers.writer[val_idx])), len(np.unique(writers.writer)),
             len(val_idx))
    return train_idx, val_idx


def prepare_data(cfg: DataConfig, *, seed: int, progress: bool = True,
                 preprocess: Preprocess | None = None) -> PreparedData:
    """Load, split and describe the data a run trains on.

    ``preprocess`` fixes how folder images become input (fine-tuning passes the source
    model's); by default it follows ``cfg`` and the data (:func:`preprocess_for_folder`).

    Raises:
        DataError, DatasetNotFoundError: missing or unreadable data.
    """
    if cfg.val_split == "writer" and cfg.dataset != "mnist":
        _writer_split(cfg, None, seed)  # raises: no writer metadata
    if cfg.dataset in DATASETS:
        folder = Path(cfg.data_dir) if cfg.data_dir else None
        if folder is not None and folder.is_dir() and not _has_idx(folder) \
                and _holds_class_images(folder):
            # else the loader looks for the dataset's files elsewhere and may find them there
            raise DataError(
                f"{folder} is an image folder (class subfolders), not where the {cfg.dataset} "
                f"files are; to train on its images pass --dataset {folder} (data.dataset), "
                f"or point --data-dir at the folder that holds the {cfg.dataset} files")
        return _prepare_registered(cfg, seed, progress)
    root = Path(cfg.dataset)
    if not root.is_dir():
        close = close_names(cfg.dataset, DATASETS.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(
            f"dataset {cfg.dataset!r} is neither a registered dataset "
            f"({', '.join(DATASETS.names())}) nor an image folder{hint}; pass a name or a "
            "directory laid out as DIR/<class>/*.png"
        )
    return _prepare_folder(cfg, seed, progress, preprocess)


# --- getting a split back ---------------------------------------------------------------------

@dataclass(frozen=True)
class SplitSource:
    """Where a split came from: the run's own data (``own``) or other data (``external``)."""

    name: str  # the dataset name or folder
    split: str  # train | val | test | all
    origin: str  # own | external
    detail: str  # a phrase for reports, e.g. "test split from splits.json"


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``splits.json``, or None for a run written before manifests.

    Raises:
        DataError: the file exists but is not a cnnlab split manifest.
    """
    path = run_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not valid JSON ({e}); restore it from the run, or retrain"
                        ) from e
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{path} is not a cnnlab split manifest")
    return manifest


def _manifest_folder_split(manifest: dict[str, Any], split: str, pre: Preprocess,
                           classes: list[str], where: Path, progress: bool) -> ImageDataset:
    entry = manifest["splits"][split]
    entries, root = entry["files"], Path(entry["root"])
    if not root.is_dir():
        raise DataError(f"{where}: the folder of its {split} split, {root}, is not here; set "
                        "data_dir to evaluate on other images")
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({e["class"] for e in entries} - set(index))
    if unknown:
        raise DataError(f"{where}: the {split} split names classes {unknown} the model does not "
                        "have")
    listing = FolderListing(root, list(classes), [e["path"] for e in entries],
                            [index[e["class"]] for e in entries])
    missing = [p for p in listing.paths if not (root / p).is_file()]
    if missing:
        raise DataError(f"{where}: {len(missing)} of the {len(entries)} files of the {split} "
                        f"split are gone from {root} (first: {missing[0]}); restore them, or "
                        "set data_dir to evaluate on another folder")
    ds, digests = read_folder_images(listing, pre, progress=progress,
                                     name=f"{root.name} {split}")
    changed = [e["path"] for e, d in zip(entries, digests, strict=True) if e["sha256"] != d]
    if changed:
        raise DataError(f"{where}: {len(changed)} files of the {split} split changed since "
                        f"training (first: {root / changed[0]}); the split is no longer the "
                        "one the run was measured on. Restore them, or retrain")
    return ds


def _same_folder(a: Path, b: str | None) -> bool:
    if not b:
        return False
    try:
        pa, pb = a.resolve(), Path(b).resolve()
    except OSError:
        return False
    return split_parent(pa) == split_parent(pb)


def _holds_class_images(root: Path) -> bool:
    """Whether ``root`` (or its ``train/``) has a class subfolder with an image in it."""
    for d in (root / "train", root):
        if not d.is_dir():
            continue
        for sub in d.iterdir():
            if sub.is_dir() and not sub.name.startswith(".") and any(
                    p.suffix.lower() in IMAGE_EXTENSIONS for p in sub.iterdir()):
                return True
    return False


def _is_class_folder(root: Path) -> bool:
    for d in (root / "test", root / "train", root):
        if d.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in d.iterdir()):
            return True
    return False


def load_split(model: Any, split: str = "test", *, dataset: str | None = None,
               data_dir: str | None = None, progress: bool = False,
               allow_download: bool = True) -> tuple[ImageDataset, SplitSource]:
    """One split of a trained model's data, or other data brought to the model's input: the
    one way any command gets images to evaluate, calibrate, check or replay.

    Args:
        model: a loaded :class:`cnnlab.inference.Model` (its path, config, classes, preprocessing).
        split: ``train``, ``val`` or ``test`` of the run's own data.
        dataset: other data: a registered name or an image folder (``external`` unless it is
            the folder the model was trained on, whose ``splits.json`` then decides).
        data_dir: where a registered dataset's files are, or an image folder (as ``dataset``).
        allow_download: whether a registered dataset may be downloaded when missing.

    Raises:
        ConfigError: an unknown split.
        DataError, DatasetNotFoundError: the data is missing, changed, or does not fit.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    pre = Preprocess.from_spec(model.preprocessing)
    classes = list(model.classes)
    data_cfg = model.config.get("data", {})
    run_dir = Path(model.path).parent if model.path else None
    manifest = read_manifest(run_dir) if run_dir is not None else None
    trained_on = str(data_cfg.get("dataset") or "mnist")
    if dataset is None and data_dir and Path(data_dir).is_dir() \
            and _is_class_folder(Path(data_dir)) and not _has_idx(Path(data_dir)):
        dataset, data_dir = data_dir, None  # data_dir names an image folder
    name = dataset or trained_on
    if name in DATASETS:
        origin = "own" if name == trained_on else "external"
        ds = _registered_split(model, name, split if origin == "own" else
                               ("train" if split == "train" else "test"), pre,
                               data_dir or (data_cfg.get("data_dir") if origin == "own" else None)
                               or None, manifest if origin == "own" else None, progress,
                               allow_download)
        detail = f"{name} {split} split" if origin == "own" else f"{name} test split (external)"
        return _checked(ds, name, classes, pre), SplitSource(name, split, origin, detail)
    root = Path(name)
    own = _same_folder(root, trained_on) or (manifest is not None and _same_folder(
        root, manifest.get("root")))
    if own and manifest is not None and split in manifest.get("splits", {}):
        ds = _manifest_folder_split(manifest, split, pre, classes, run_dir or root, progress)
        return _checked(ds, str(root), classes, pre), SplitSource(
            str(root), split, "own", f"{root} {split} split (splits.json)")
    if dataset is None and own and manifest is None:
        raise DataError(f"{run_dir}: the run has no splits.json, so its {split} split of {root} "
                        "is unknown (it was trained before cnnlab wrote manifests); set "
                        "data_dir to evaluate on a folder of held-out images")
    if not root.is_dir():
        raise DataError(f"dataset {name!r} is neither a known dataset "
                        f"({', '.join(DATASETS.names())}) nor an image folder; pass a name or a "
                        "directory laid out as DIR/<class>/*.png")
    if own and split != "test":
        raise DataError(f"{root}: the {split} split of the run is listed in splits.json, which "
                        f"has no {split!r} entry")
    sub = root / split if (root / split).is_dir() else (
        root / "test" if (root / "test").is_dir() else root)
    listing = list_image_folder(sub)
    _check_folder_classes(listing, classes)
    listing = FolderListing(listing.root, classes, listing.paths,
                            [classes.index(listing.classes[t]) for t in listing.targets])
    ds, _ = read_folder_images(listing, pre, progress=progress)
    what = "all of it" if sub == root else f"its {sub.name}/ folder"
    return _checked(ds, str(root), classes, pre), SplitSource(
        str(root), "all" if sub == root else sub.name, "external",
        f"{root} ({what}; external: not the data the model was trained on)")


def _has_idx(path: Path) -> bool:
    return any(path.glob("*-ubyte*")) or any(path.glob("*/*-ubyte*"))


def _check_folder_classes(listing: FolderListing, classes: list[str]) -> None:
    extra = sorted(set(listing.classes) - set(classes))
    if extra:
        raise DataError(f"{listing.root} has class folders {extra} that the model does not know "
                        f"(it was trained on {classes}); remove them or evaluate another folder")


def _registered_split(model: Any, name: str, split: str, pre: Preprocess, data_dir: str | None,
                      manifest: dict[str, Any] | None, progress: bool,
                      allow_download: bool) -> ImageDataset:
    records = load_dataset(name, "test" if split == "test" else "train", data_dir=data_dir,
                           download=None if allow_download else False, progress=progress)
    ds = _records(records, pre)
    if split == "test":
        return ds
    entry = (manifest or {}).get("splits", {}).get(split)
    if entry is not None and isinstance(entry.get("indices"), list):
        return ds.subset(np.asarray(entry["indices"], dtype=np.int64))
    # a run without a manifest: the split its config makes
    data_cfg = model.config.get("data", {})
    seed = int(model.config.get("train", {}).get("seed", 0))
    frac = float(data_cfg.get("val_fraction", 0.0))
    if split == "val":
        if frac <= 0:
            raise DataError(f"the model was trained on all of {name}'s training images (no "
                            "validation split); there are no validation images to use")
        return ds.subset(stratified_split(ds.targets, frac, seed)[1])
    if frac > 0:
        return ds.subset(stratified_split(ds.targets, frac, seed)[0])
    return ds


def _checked(ds: ImageDataset, name: str, classes: list[str], pre: Preprocess) -> ImageDataset:
    return check_split(ds, name, classes, pre.shape)


def check_split(ds: ImageDataset, name: str, classes: list[str],
                shape: tuple[int, int, int]) -> ImageDataset:
    """``ds`` when it fits a model of these classes and input shape.

    Raises:
        DataError: other classes, another image shape, or no images.
    """
    if tuple(ds.images.shape[1:]) != shape:
        raise DataError(f"{name} images have shape {tuple(ds.images.shape[1:])} but the model "
                        f"expects {shape}")
    if list(ds.classes) != classes:
        raise DataError(f"{name} has classes {ds.classes} but the model was trained on "
                        f"{classes}")
    if len(ds) == 0:
        raise DataError(f"{name} has no images to evaluate")
    return ds
