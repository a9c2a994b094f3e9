"""Data: decode and validate files into in-memory tensors, split, normalise and augment them.

IDX files (the MNIST family) and image folders load into one :class:`ImageDataset` of uint8
images ``(N, C, H, W)`` and int64 targets; :mod:`~cnnlab.data.transforms` turns those into
normalised, augmented float batches; :func:`to_mnist_form` prepares real-world digit images.
"""

from typing import Any

from cnnlab.data.datasets import (
    DATASETS,
    DatasetInfo,
    DatasetStats,
    IdxFile,
    ImageDataset,
    dataset_info,
    default_cache_dir,
    load_dataset,
    load_idx_dataset,
)
from cnnlab.data.digits import to_mnist_form
from cnnlab.data.folders import (
    IMAGE_EXTENSIONS,
    MAX_IMAGE_PIXELS,
    FolderListing,
    image_to_array,
    list_image_folder,
    load_image_folder,
    probe_images,
    read_folder_images,
    read_image,
)
from cnnlab.data.idx import atomic_path, parse_idx, read_idx, read_idx_bytes, write_idx
from cnnlab.data.split import stratified_kfold, stratified_split
from cnnlab.data.transforms import AugmentConfig, BatchAugment, normalize

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "AugmentConfig",
    "BatchAugment",
    "DatasetInfo",
    "DatasetStats",
    "FolderListing",
    "IdxFile",
    "ImageDataset",
    "atomic_path",
    "dataset_info",
    "default_cache_dir",
    "image_to_array",
    "list_image_folder",
    "load_dataset",
    "load_idx_dataset",
    "load_image_folder",
    "normalize",
    "parse_idx",
    "probe_images",
    "read_folder_images",
    "read_idx",
    "read_idx_bytes",
    "read_image",
    "sample_grid",
    "stratified_kfold",
    "stratified_split",
    "to_mnist_form",
    "write_idx",
]


def __getattr__(name: str) -> Any:
    # sample_grid pulls in matplotlib (~0.3 s); import it only when asked for.
    if name == "sample_grid":
        from cnnlab.data.viz import sample_grid

        return sample_grid
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
