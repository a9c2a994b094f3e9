"""Turn a :class:`~cnnlab.config.DataConfig` into in-memory train/validation/test sets.

``data.dataset`` names a registered dataset (``mnist``, ``fashion-mnist``, ``kmnist``) or an
image folder. A folder with ``train/`` (and optionally ``test/``) subfolders is split that way;
any other folder is the training set and has no test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cnnlab.config import DataConfig
from cnnlab.data import DATASETS, ImageDataset, load_dataset, load_image_folder, stratified_split
from cnnlab.errors import DataError

__all__ = ["PreparedData", "prepare_data", "preprocessing_for"]

# Datasets whose images follow MNIST's digit form; predict brings real-world images to it.
DIGIT_DATASETS = {"mnist"}


@dataclass
class PreparedData:
    train: ImageDataset
    val: ImageDataset | None
    test: ImageDataset | None
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    preprocessing: dict

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return (int(self.train.images.shape[2]), int(self.train.images.shape[3]))


def preprocessing_for(dataset: str, channels: int, size: tuple[int, int]) -> dict:
    """How predict turns an arbitrary image file into model input for this dataset."""
    kind = "mnist-digits" if dataset in DIGIT_DATASETS else "resize"
    return {"kind": kind, "channels": channels, "height": size[0], "width": size[1]}


def prepare_data(cfg: DataConfig, *, seed: int, progress: bool = True) -> PreparedData:
    """Load, split and describe the data a run trains on.

    Raises:
        DataError, DatasetNotFoundError: missing or unreadable data.
    """
    data_dir = cfg.data_dir or None
    channels = cfg.channels or None
    size = (cfg.image_size, cfg.image_size) if cfg.image_size else None
    test: ImageDataset | None
    if cfg.dataset in DATASETS:
        full = load_dataset(cfg.dataset, "train", data_dir=data_dir, progress=progress)
        test = load_dataset(cfg.dataset, "test", data_dir=data_dir, progress=progress)
        if size is not None and size != tuple(full.images.shape[2:]):
            full, test = _resize(full, size), _resize(test, size)
    else:
        root = Path(cfg.dataset)
        if not root.is_dir():
            known = ", ".join(DATASETS.names())
            raise DataError(
                f"dataset {cfg.dataset!r} is neither a registered dataset ({known}) nor an "
                "image folder; pass a name or a directory laid out as DIR/<class>/*.png"
            )
        if (root / "train").is_dir():
            full = load_image_folder(root / "train", channels=channels, size=size or (28, 28),
                                     progress=progress)
            test = (load_image_folder(root / "test", channels=full.images.shape[1],
                                      size=tuple(full.images.shape[2:]), progress=progress)
                    if (root / "test").is_dir() else None)
            if test is not None and test.classes != full.classes:
                raise DataError(
                    f"{root / 'test'} has classes {test.classes} but {root / 'train'} has "
                    f"{full.classes}; both splits need the same class folders"
                )
        else:
            full = load_image_folder(root, channels=channels, size=size or (28, 28),
                                     progress=progress)
            test = None
    if channels and full.images.shape[1] != channels:
        full = _convert_channels(full, channels)
        test = _convert_channels(test, channels) if test is not None else None
    if cfg.val_fraction > 0:
        train_idx, val_idx = stratified_split(full.targets, cfg.val_fraction, seed)
        train, val = full.subset(train_idx), full.subset(val_idx)
    else:
        train, val = full, None
    if cfg.limit and cfg.limit < len(train):
        # a stratified subset: the classes keep their proportions
        keep, _ = stratified_split(train.targets, 1 - cfg.limit / len(train), seed)
        train = train.subset(keep)
    stats = train.stats()
    mean = tuple(round(v, 4) for v in stats.mean)
    std = tuple(round(max(v, 1e-3), 4) for v in stats.std)
    shape = tuple(train.images.shape[1:])
    return PreparedData(
        train=train, val=val, test=test, classes=list(full.classes), mean=mean, std=std,
        preprocessing=preprocessing_for(cfg.dataset, shape[0], (shape[1], shape[2])),
    )


def _resize(ds: ImageDataset, size: tuple[int, int]) -> ImageDataset:
    import torch.nn.functional as F

    x = F.interpolate(ds.images.float(), size=size, mode="bilinear", antialias=True,
                      align_corners=False)
    images = x.round().clamp(0, 255).to(torch.uint8)
    return ImageDataset(images=images, targets=ds.targets, classes=ds.classes, name=ds.name,
                        source=ds.source)


def _convert_channels(ds: ImageDataset, channels: int) -> ImageDataset:
    c = ds.images.shape[1]
    if c == channels:
        return ds
    if c == 1 and channels == 3:
        images = ds.images.expand(-1, 3, -1, -1).contiguous()
    else:  # RGB -> grayscale with ITU-R 601 luma weights, as PIL's convert("L")
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        images = (ds.images.float() * w).sum(1, keepdim=True).round().clamp(0, 255)
        images = images.to(torch.uint8)
    return ImageDataset(images=images, targets=ds.targets, classes=ds.classes, name=ds.name,
                        source=ds.source)
