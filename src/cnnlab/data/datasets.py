"""In-memory image datasets and the MNIST family (MNIST, Fashion-MNIST, KMNIST).

Everything loads into one :class:`ImageDataset`: uint8 images ``(N, C, H, W)`` and int64
targets. Training slices batches from these tensors directly (no DataLoader workers), which
is the fastest path for small images.

Dataset files are looked up in ``data_dir``, then ``$CNNLAB_DATA_DIR`` (each both as given
and with ``<name>/`` appended), then ``data/<name>`` under the working directory (where a
clone of the repository ships MNIST, so commands run from its root find it; only read,
never downloaded into), then ``~/.cache/cnnlab/<name>`` (``$XDG_CACHE_HOME`` is honoured).
Every file is verified by checksum while it streams in, and its header may declare no more
data than the dataset's known size (so a gzip bomb is refused before it inflates); missing
files are downloaded from the dataset's mirrors, over https only, when allowed.

Longer than 450 lines: the dataset record, the registry of the MNIST family with its checksums
and shapes, and verified loading belong together; downloads live in :mod:`cnnlab.data.download`.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.download import download_file, insecure_url_problem
from cnnlab.data.idx import read_idx
from cnnlab.errors import ConfigError, DataError, DatasetNotFoundError
from cnnlab.registry import Registry

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetStats",
    "IdxFile",
    "ImageDataset",
    "dataset_info",
    "default_cache_dir",
    "load_dataset",
    "load_idx_dataset",
]

SPLITS = ("train", "test")
DATA_DIR_ENV = "CNNLAB_DATA_DIR"
WORKDIR_DATA = "data"  # <working directory>/data/<name>: the repository's shipped data
OFFLINE_ENV = "CNNLAB_OFFLINE"  # set to 1 to forbid downloads
DOWNLOAD_TIMEOUT = 30.0  # seconds without data before a mirror counts as failed
# A download may be at most this many times the file's uncompressed size (header + data):
# gzip grows incompressible data by well under 1 %, so only a wrong or hostile file gets near.
DOWNLOAD_SIZE_FACTOR = 2


@dataclass(frozen=True)
class DatasetStats:
    """Summary of an :class:`ImageDataset` (``dataclasses.asdict`` gives JSON-ready data)."""

    name: str
    size: int
    shape: tuple[int, int, int]  # (C, H, W)
    class_counts: dict[str, int]
    mean: tuple[float, ...]  # per channel, pixels on [0, 1]
    std: tuple[float, ...]


@dataclass
class ImageDataset:
    """Images and labels held in memory as tensors.

    Raises:
        DataError: from the constructor, when the tensors do not have the documented form.
    """

    images: torch.Tensor = field(repr=False)  # uint8 (N, C, H, W)
    targets: torch.Tensor = field(repr=False)  # int64 (N,), indices into ``classes``
    classes: list[str]
    name: str = ""
    source: str = ""  # where the data came from (a path), for messages and reports

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(
                f"dataset {self.name!r}: images must be a uint8 tensor (N, C, H, W), got "
                f"{self.images.dtype} of shape {tuple(self.images.shape)}"
            )
        if self.targets.dtype != torch.int64 or self.targets.shape != self.images.shape[:1]:
            raise DataError(
                f"dataset {self.name!r}: targets must be an int64 tensor of shape "
                f"({len(self.images)},), got {self.targets.dtype} of shape "
                f"{tuple(self.targets.shape)}"
            )
        if len(self.targets):
            low, high = int(self.targets.min()), int(self.targets.max())
            if low < 0 or high >= len(self.classes):
                raise DataError(
                    f"dataset {self.name!r}: targets range from {low} to {high}, expected 0 to "
                    f"{len(self.classes) - 1} ({len(self.classes)} classes)"
                )

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of one image, ``(C, H, W)``."""
        c, h, w = self.images.shape[1:]
        return (c, h, w)

    @property
    def num_classes(self) -> int:
        """The number of classes (some may have no samples)."""
        return len(self.classes)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageDataset:
        """A new dataset holding the samples at ``indices`` or a boolean mask (copied).

        Raises:
            IndexError: an index is out of range.
        """
        index = torch.as_tensor(np.asarray(indices))
        index = index.nonzero().squeeze(1) if index.dtype == torch.bool else index.long()
        return ImageDataset(
            self.images[index], self.targets[index], list(self.classes), self.name, self.source
        )

    def stats(self) -> DatasetStats:
        """Counts per class, image shape, and per-channel pixel mean/std on [0, 1]."""
        counts = torch.bincount(self.targets, minlength=len(self.classes)).tolist()
        values = np.arange(256, dtype=np.float64) / 255.0
        mean, std = [], []
        for c in range(self.shape[0]):
            # A 256-bin histogram gives exact moments without a float copy of the data.
            hist = torch.bincount(self.images[:, c].reshape(-1), minlength=256).numpy()
            n = max(int(hist.sum()), 1)
            m = float(hist @ values) / n
            var = float(hist @ (values - m) ** 2) / n
            mean.append(m)
            std.append(var**0.5)
        return DatasetStats(
            name=self.name,
            size=len(self),
            shape=self.shape,
            class_counts=dict(zip(self.classes, counts, strict=True)),
            mean=tuple(mean),
            std=tuple(std),
        )


# ---------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class IdxFile:
    """One IDX file of a dataset and the checksums that identify its content."""

    name: str  # file name without ".gz"
    sha256: str | None = None  # of the uncompressed bytes: accepts .gz in any compression
    gz_md5: str | None = None  # of the canonical .gz distribution file
    shape: tuple[int, ...] | None = None  # of its uint8 array: caps what a header may declare

    @property
    def max_data_bytes(self) -> int | None:
        """The most data bytes (after the header) the file may declare: its known size."""
        return None if self.shape is None else math.prod(self.shape)  # uint8: 1 byte each

    @property
    def max_download_bytes(self) -> int | None:
        """The most bytes a download of the ``.gz`` may take (see DOWNLOAD_SIZE_FACTOR)."""
        if self.shape is None:
            return None
        return DOWNLOAD_SIZE_FACTOR * (4 + 4 * len(self.shape) + math.prod(self.shape))


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a registered dataset before loading it."""

    name: str
    description: str
    classes: tuple[str, ...]
    shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...] | None  # per channel on [0, 1], training split; None if unknown
    std: tuple[float, ...] | None
    files: dict[str, tuple[IdxFile, IdxFile]]  # split -> (images, labels)
    mirrors: tuple[str, ...]  # base URLs, tried in order
    homepage: str = ""
    license: str = ""

    @property
    def raw_allowed(self) -> bool:
        """Uncompressed files are accepted only where their sha256 is known."""
        return all(f.sha256 for pair in self.files.values() for f in pair)


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def _register(info: DatasetInfo) -> None:
    DATASETS.register(info.name, description=info.description)(info)


# split -> ((images file, shape), (labels file, shape)); the three datasets share it.
_MNIST_LAYOUT = {
    "train": (("train-images-idx3-ubyte", (60000, 28, 28)),
              ("train-labels-idx1-ubyte", (60000,))),
    "test": (("t10k-images-idx3-ubyte", (10000, 28, 28)),
             ("t10k-labels-idx1-ubyte", (10000,))),
}


def _files(
    checksums: dict[str, tuple[str | None, str | None]],
) -> dict[str, tuple[IdxFile, IdxFile]]:
    """Build the split -> (images, labels) table from {file name: (sha256, gz_md5)}."""
    return {
        split: (IdxFile(images, *checksums[images], shape=images_shape),
                IdxFile(labels, *checksums[labels], shape=labels_shape))
        for split, ((images, images_shape), (labels, labels_shape)) in _MNIST_LAYOUT.items()
    }


_register(
    DatasetInfo(
        name="mnist",
        description="MNIST handwritten digits (LeCun, Cortes, Burges), 60k train / 10k test",
        classes=tuple(str(d) for d in range(10)),
        shape=(1, 28, 28),
        mean=(0.1307,),
        std=(0.3081,),
        # sha256 of the uncompressed bytes (data/README.md), md5 of the canonical .gz
        # (torchvision): a recompressed .gz passes by its content, the original by either.
        files=_files({
            "train-images-idx3-ubyte": (
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            ),
            "train-labels-idx1-ubyte": (
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "d53e105ee54ea40749a09fcbcd1e9432",
            ),
            "t10k-images-idx3-ubyte": (
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "9fb629c4189551a2d022fa330f9573f3",
            ),
            "t10k-labels-idx1-ubyte": (
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ),
        }),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        homepage="http://yann.lecun.com/exdb/mnist/",
        license="CC BY-SA 3.0",
    )
)

# Fashion-MNIST and KMNIST: only the md5 of the canonical .gz files is published (as listed
# in torchvision's datasets/mnist.py); no sha256 of the uncompressed bytes could be found.
# So these accept only the original .gz files, matched by md5, and no uncompressed copies.
_register(
    DatasetInfo(
        name="fashion-mnist",
        description="Fashion-MNIST Zalando article images (Xiao et al. 2017), 60k / 10k",
        classes=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        shape=(1, 28, 28),
        mean=(0.2860,),
        std=(0.3530,),
        files=_files({
            "train-images-idx3-ubyte": (None, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            "train-labels-idx1-ubyte": (None, "25c81989df183df01b3e8a0aad5dffbe"),
            "t10k-images-idx3-ubyte": (None, "bef4ecab320f06d8554ea6380940ec79"),
            "t10k-labels-idx1-ubyte": (None, "bb300cfdad3c16e7a12a480ee83cd310"),
        }),
        # The project's own host (fashion-mnist.s3-website...) serves plain http only; Keras
        # serves the same canonical files over https (verified by the md5s above).
        mirrors=("https://storage.googleapis.com/tensorflow/tf-keras-datasets/",),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        license="MIT",
    )
)

_register(
    DatasetInfo(
        name="kmnist",
        description="Kuzushiji-MNIST cursive hiragana (Clanuwat et al. 2018), 60k / 10k",
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        shape=(1, 28, 28),
        # Published figures disagree (std 0.3483 vs 0.3059); compute with ImageDataset.stats().
        mean=None,
        std=None,
        files=_files({
            "train-images-idx3-ubyte": (None, "bdb82020997e1d708af4cf47b453dcf7"),
            "train-labels-idx1-ubyte": (None, "e144d726b3acfaa3e44228e80efcd344"),
            "t10k-images-idx3-ubyte": (None, "5c965bf0a639b31b8f53240b1b52f4d7"),
            "t10k-labels-idx1-ubyte": (None, "7320c461ea6c1c855c0b718fb2a4b134"),
        }),
        mirrors=("https://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        homepage="https://github.com/rois-codh/kmnist",
        license="CC BY-SA 4.0",
    )
)


def dataset_info(name: str) -> DatasetInfo:
    """Metadata of a registered dataset: classes, shape, mean/std, files, mirrors.

    Raises:
        RegistryError: unknown name (the message suggests close names).
    """
    return DATASETS.get(name)


# ------------------------------------------------------------------------------ loading


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cnnlab``, or ``~/.cache/cnnlab``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnlab"


def _lookup_dirs(name: str, data_dir: str | os.PathLike[str] | None
                 ) -> tuple[list[Path], list[Path]]:
    """Where to look for ``name``'s files, in order, and the subset downloads may go to.

    ``<cwd>/data/<name>`` is only read, never downloaded into: a download must not land in
    whatever directory a command happens to run from. It is ``data/<name>``, not ``data/``
    itself, because the MNIST family shares file names: loose files in ``data/`` could be
    any of them.
    """
    roots = [Path(data_dir)] if data_dir is not None else []
    if os.environ.get(DATA_DIR_ENV):
        roots.append(Path(os.environ[DATA_DIR_ENV]))
    given = [d for root in roots for d in (root, root / name)]
    cache = default_cache_dir() / name
    dirs = [*given, Path.cwd() / WORKDIR_DATA / name, cache]
    return _unique(dirs), _unique([*given, cache])


def _unique(dirs: list[Path]) -> list[Path]:
    """``dirs`` with ``~`` expanded, in order, without a second spelling of the same place."""
    seen: dict[Path, Path] = {}
    for d in (d.expanduser() for d in dirs):
        seen.setdefault(d.resolve(), d)
    return list(seen.values())


def _find(spec: IdxFile, dirs: list[Path], raw_allowed: bool) -> Path | None:
    names = [f"{spec.name}.gz", spec.name] if raw_allowed else [f"{spec.name}.gz"]
    for d in dirs:
        for n in names:
            if (d / n).is_file():
                return d / n
    return None


def _verify(spec: IdxFile, found_sha256: str, found_md5: str | None, label: str) -> None:
    """Check a file's digests against the published checksums; ``label`` names it in errors.

    Args:
        found_sha256: sha256 of the file's uncompressed bytes.
        found_md5: md5 of the file as stored (the ``.gz``), or None if not computed.
    """
    if spec.sha256 and found_sha256 == spec.sha256:
        return
    if spec.gz_md5 and found_md5 == spec.gz_md5:
        return
    expected = " or ".join(
        s
        for s in (
            spec.sha256 and f"sha256 {spec.sha256} of the uncompressed data",
            spec.gz_md5 and f"md5 {spec.gz_md5} of the original {spec.name}.gz",
        )
        if s
    )
    raise DataError(
        f"{label}: checksum mismatch: expected {expected}, found sha256 {found_sha256} of the "
        "uncompressed data; the file is corrupt or belongs to another dataset: delete it and "
        "download it again, or copy the original file"
    )


def _read_verified(path: Path, spec: IdxFile, label: str | None = None) -> np.ndarray:
    """Read ``path`` as ``spec``: its header capped at the known size, checksummed as it streams.

    Not cached: sha256 of the 47 MB uncompressed MNIST training images takes ~30 ms here,
    against ~160 ms for the gunzip that loading needs anyway.

    Raises:
        DataError: the file declares more data than ``spec``'s shape, is corrupt, or fails
            its checksum.
    """
    data_hash = hashlib.sha256()
    file_hash = hashlib.md5() if spec.gz_md5 else None
    label = label or str(path)
    array = read_idx(path, max_bytes=spec.max_data_bytes, data_hash=data_hash,
                     file_hash=file_hash, source=label)
    _verify(spec, data_hash.hexdigest(), file_hash.hexdigest() if file_hash else None, label)
    return array


def _writable_target(dirs: list[Path], name: str) -> Path | None:
    """Where a download goes: the first lookup root we can write, as ``<root>/<name>``."""
    for d in dirs:
        target = d if d.name == name else d / name
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(target, os.W_OK):
            return target
    return None


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    download: bool | None = None,
    progress: bool = True,
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float = DOWNLOAD_TIMEOUT,
    allow_http_loopback: bool = False,
) -> ImageDataset:
    """Load one split of a registered dataset into memory, verified by checksum.

    Args:
        name: a name in :data:`DATASETS` (``mnist``, ``fashion-mnist``, ``kmnist``).
        split: ``"train"`` or ``"test"``.
        data_dir: the directory to look in first (the files directly in it, or in
            ``<data_dir>/<name>/``); then ``$CNNLAB_DATA_DIR``, then ``data/<name>`` under
            the working directory, then the cache directory.
        download: fetch missing files from the mirrors into the first writable one of
            ``data_dir``, ``$CNNLAB_DATA_DIR`` and the cache directory (the working
            directory's ``data/`` is only read); ``None`` means yes unless
            ``$CNNLAB_OFFLINE`` is set to 1.
        progress: show a progress bar while downloading.
        mirrors: base URLs to try instead of the dataset's own; https only (see below).
        timeout: seconds a mirror may stay silent before it counts as failed.
        allow_http_loopback: accept plain-http mirrors on a loopback host (127.0.0.0/8,
            ::1, localhost): for tests' local servers. Plain http to any other host is
            always refused, and so is a redirect from https to http.

    Raises:
        RegistryError: unknown dataset name.
        ConfigError: ``split`` is not ``"train"`` or ``"test"``, or a mirror is not https.
        DatasetNotFoundError: files missing and not downloadable; the message lists the
            file names, the directories searched, the mirrors tried and how to supply them.
        DataError: a file declares more data than the dataset holds, fails its checksum, is
            corrupt, or images and labels disagree.
    """
    info = dataset_info(name)
    if download is None:
        download = os.environ.get(OFFLINE_ENV, "0").strip() in ("", "0")
    if split not in SPLITS:
        raise ConfigError(
            f"The 'split' parameter of load_dataset must be one of {', '.join(SPLITS)}. "
            f"Got {split!r} instead."
        )
    for mirror in mirrors or ():
        problem = insecure_url_problem(mirror, allow_http_loopback)
        if problem:
            raise ConfigError(
                f"The 'mirrors' parameter of load_dataset must hold https URLs ({problem}). "
                f"Got {mirror!r} instead."
            )
    specs = info.files[split]
    dirs, download_dirs = _lookup_dirs(name, data_dir)
    paths = [_find(spec, dirs, info.raw_allowed) for spec in specs]
    failures: list[str] = []
    missing = [spec for spec, path in zip(specs, paths, strict=True) if path is None]
    if missing and download:
        target = _writable_target(download_dirs, name)
        if target is None:
            failures.append("no writable directory to download into")
        else:
            for i, spec in enumerate(specs):
                if paths[i] is None:
                    paths[i] = download_file(
                        spec, target, mirrors or info.mirrors, timeout, progress, failures,
                        functools.partial(_read_verified, spec=spec,
                                          label="the downloaded file"),
                        allow_http_loopback)
                    if paths[i] is None:
                        break  # the split cannot load; spare the user more timeouts
    if any(p is None for p in paths):
        wanted = [
            f"{spec.name}.gz" + (f" (or {spec.name})" if info.raw_allowed else "")
            for spec, path in zip(specs, paths, strict=True)
            if path is None
        ]
        how = ("download failed: " + "; ".join(failures) if download
               else f"downloading is off (${OFFLINE_ENV}=1 or download=False)")
        raise DatasetNotFoundError(
            f"{name} {split} split not found: missing {', '.join(wanted)}; looked in "
            f"{', '.join(map(str, dirs))}; {how}. Fix: copy the files into one of these "
            f"directories, or point --data-dir DIR (or ${DATA_DIR_ENV}) at a directory that "
            "holds them"
        )
    images_path, labels_path = paths[0], paths[1]
    assert images_path is not None and labels_path is not None
    images = _read_verified(images_path, specs[0])
    labels = _read_verified(labels_path, specs[1])
    return _to_dataset(images, labels, list(info.classes), name, images_path, labels_path,
                       expected_hw=info.shape[1:])


def load_idx_dataset(
    images_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
    name: str | None = None,
) -> ImageDataset:
    """Load any pair of IDX files (images ``(N, H, W)`` uint8, labels ``(N,)``), unverified.

    Args:
        classes: class names; by default ``"0"`` .. ``str(max label)``.
        name: the dataset's name; by default the images file's name.

    Raises:
        DatasetNotFoundError: a file does not exist.
        DataError: a file is corrupt, or images and labels do not fit together.
    """
    images_path, labels_path = Path(images_path), Path(labels_path)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if classes is None and labels.size and labels.ndim == 1 and labels.min() >= 0:
        classes = [str(i) for i in range(int(labels.max()) + 1)]
    return _to_dataset(images, labels, list(classes or []), name or images_path.name,
                       images_path, labels_path)


def _to_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    name: str,
    images_path: Path,
    labels_path: Path,
    expected_hw: tuple[int, ...] | None = None,
) -> ImageDataset:
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(
            f"{images_path}: expected uint8 images of shape (N, H, W), found {images.dtype} of "
            f"shape {images.shape}; is this an images file (idx3-ubyte)?"
        )
    if expected_hw is not None and images.shape[1:] != expected_hw:
        raise DataError(
            f"{images_path}: expected {'x'.join(map(str, expected_hw))} images, found "
            f"{'x'.join(map(str, images.shape[1:]))}; the file belongs to another dataset"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"{labels_path}: expected integer labels of shape (N,), found {labels.dtype} of "
            f"shape {labels.shape}; is this a labels file (idx1-ubyte)?"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} "
            "labels; the two files must come from the same split: re-copy the matching pair"
        )
    bad = (labels < 0) | (labels >= len(classes))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{labels_path}: {int(bad.sum())} labels outside 0..{len(classes) - 1} "
            f"({len(classes)} classes), the first is {int(labels[first])} at index {first}; "
            "the file is corrupt or belongs to another dataset"
        )
    return ImageDataset(
        images=torch.from_numpy(images).unsqueeze(1),  # (N, 1, H, W)
        targets=torch.from_numpy(labels.astype(np.int64)),
        classes=classes,
        name=name,
        source=str(images_path),
    )
