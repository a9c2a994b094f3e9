"""Who wrote each MNIST digit: the QMNIST extended labels (Yadav & Bottou, "Cold Case: The Lost
MNIST Digits", 2019; BSD licence, ``data/qmnist/LICENSE``).

The QMNIST label files match MNIST's 60,000 training digits one to one, in order, and the first
10,000 rows of the test file match MNIST's 10,000 test digits (its other 50,000 rows describe
digits whose images MNIST does not hold, and are dropped). Each row carries the NIST HSF series
and the NIST writer id; the series says the writer population:

- hsf0 and hsf1: Census Bureau employees (writer ids 0-610),
- hsf4: high-school students (writer ids 2100-2599).

Measured on these files, and contrary to the MNIST web page: test digits 0-4999 were all written
by students, 5000-9999 by employees (plus one student digit); train and test share no writer.

The files are looked up like the MNIST files (``data_dir``, ``$CNNLAB_DATA_DIR``,
``data/qmnist`` under the working directory, the cache directory) and verified by the sha256 of
their uncompressed bytes while they stream in. They are never downloaded: the repository ships
them.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnlab.data.datasets import IdxFile, _lookup_dirs, _verify
from cnnlab.data.idx import read_idx
from cnnlab.errors import ConfigError, DataError, DatasetNotFoundError

__all__ = ["POPULATIONS", "QMNIST_FILES", "WriterLabels", "load_writers", "population_of",
           "writer_disjoint_split", "writer_kfold"]

NAME = "qmnist"
#: the MNIST rows each split's file describes (the test file's first 10,000)
MNIST_ROWS = {"train": 60000, "test": 10000}
QMNIST_FILES = {
    "train": IdxFile("qmnist-train-labels-idx2-int",
                     "bb1b6e1ec7b04fd5696f1ed50b5f58f8ef195118edd5c93c81783df9740b8ac5",
                     shape=(60000, 8)),
    "test": IdxFile("qmnist-test-labels-idx2-int",
                    "92d0ccb8c25f9c6534270fb4be7e1d24a1c6d315edfc8a638bfbd31c70f362dd",
                    shape=(60000, 8)),
}
#: population name -> (who, NIST HSF series)
POPULATIONS: dict[str, tuple[str, tuple[int, ...]]] = {
    "student": ("high-school students (NIST hsf4)", (4,)),
    "employee": ("Census Bureau employees (NIST hsf0, hsf1)", (0, 1)),
}
_COLUMNS = 8  # class, series, writer, writer's digit index, class code, NIST index, dup, unused


@dataclass(frozen=True)
class WriterLabels:
    """Writer metadata of one MNIST split, one entry per MNIST digit, in MNIST's order."""

    split: str
    classes: np.ndarray = field(repr=False)  # int64 (N,): the digit, equal to MNIST's label
    series: np.ndarray = field(repr=False)  # int64 (N,): NIST HSF series (0, 1, 4)
    writer: np.ndarray = field(repr=False)  # int64 (N,): NIST writer id
    source: str = ""

    def __len__(self) -> int:
        return len(self.writer)

    @property
    def population(self) -> np.ndarray:
        """``"student"`` or ``"employee"`` per digit (see :data:`POPULATIONS`)."""
        return population_of(self.series)

    def check_targets(self, targets: np.ndarray) -> None:
        """Check that these labels describe ``targets`` (MNIST's labels of the same split).

        Raises:
            DataError: another length or another digit anywhere.
        """
        t = np.asarray(targets)
        if t.shape != self.classes.shape:
            raise DataError(f"QMNIST {self.split} labels describe {len(self)} digits, the data "
                            f"holds {t.shape[0] if t.ndim else 0}; writer groups exist only for "
                            f"the whole MNIST {self.split} split, in its order")
        bad = np.flatnonzero(t != self.classes)
        if len(bad):
            raise DataError(f"QMNIST {self.split} labels disagree with the data's labels at "
                            f"{len(bad)} indices (first: {int(bad[0])}); the data is not MNIST's "
                            f"{self.split} split in its original order")


def population_of(series: np.ndarray) -> np.ndarray:
    """The population name of each NIST HSF series value.

    Raises:
        DataError: a series that is neither a student nor an employee one.
    """
    s = np.asarray(series)
    out = np.full(s.shape, "", dtype="<U8")
    for name, (_, values) in POPULATIONS.items():
        out[np.isin(s, values)] = name
    if (out == "").any():
        raise DataError(f"unknown NIST HSF series {sorted(set(s[out == ''].tolist()))}; "
                        "expected 0, 1 (employees) or 4 (students)")
    return out


def _find(spec: IdxFile, data_dir: str | os.PathLike[str] | None) -> tuple[Path | None,
                                                                           list[Path]]:
    dirs, _ = _lookup_dirs(NAME, data_dir)
    if data_dir is not None:  # data_dir=data/mnist: the labels beside it in data/qmnist
        dirs.append(Path(data_dir).expanduser().parent / NAME)
    for d in dirs:
        for n in (f"{spec.name}.gz", spec.name):
            if (d / n).is_file():
                return d / n, dirs
    return None, dirs


def load_writers(split: str = "test", data_dir: str | os.PathLike[str] | None = None
                 ) -> WriterLabels:
    """The writer of every digit of MNIST's ``split``, verified by checksum.

    Args:
        split: ``"train"`` (60,000 digits) or ``"test"`` (10,000).
        data_dir: a directory to look in first (the files in it or in ``<data_dir>/qmnist``,
            or in ``qmnist/`` beside it); then as for MNIST.

    Raises:
        ConfigError: an unknown split.
        DatasetNotFoundError: the file is in none of the directories.
        DataError: the file fails its checksum or has another shape.
    """
    if split not in MNIST_ROWS:
        raise ConfigError(f"The 'split' parameter of load_writers must be one of train, test. "
                          f"Got {split!r} instead.")
    spec = QMNIST_FILES[split]
    path, dirs = _find(spec, data_dir)
    if path is None:
        raise DatasetNotFoundError(
            f"QMNIST writer labels for MNIST {split} not found: missing {spec.name}.gz; looked "
            f"in {', '.join(map(str, dirs))}. Fix: copy data/qmnist/ from the repository (or "
            "../shared/data/qmnist) into one of these directories, or point --data-dir at it")
    return _load(split, str(path.resolve()))


@functools.lru_cache(maxsize=4)
def _load(split: str, path: str) -> WriterLabels:
    spec = QMNIST_FILES[split]
    assert spec.shape is not None
    data_hash = hashlib.sha256()
    array = read_idx(path, max_bytes=int(np.prod(spec.shape)) * 4, data_hash=data_hash)
    _verify(spec, data_hash.hexdigest(), None, path)
    if array.shape != spec.shape or array.dtype.kind != "i":
        raise DataError(f"{path}: expected int32 rows of shape {spec.shape}, found "
                        f"{array.dtype} {array.shape}")
    rows = array[:MNIST_ROWS[split]].astype(np.int64)
    rows.setflags(write=False)  # cached and shared: nobody may change it
    return WriterLabels(split, rows[:, 0], rows[:, 1], rows[:, 2], source=path)


def writer_disjoint_split(writers: np.ndarray, fraction: float, seed: int
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about ``fraction`` of the images as whole writers: (keep, held_out) indices,
    sorted, sharing no writer (scikit-learn's ``GroupShuffleSplit`` over writers).

    Raises:
        ConfigError: ``fraction`` not in (0, 1), or fewer than two writers.
    """
    from sklearn.model_selection import GroupShuffleSplit

    w = np.asarray(writers)
    if not (0 < fraction < 1):
        raise ConfigError(f"The 'fraction' parameter of writer_disjoint_split must be in (0, 1). "
                          f"Got {fraction!r} instead.")
    if len(np.unique(w)) < 2:
        raise ConfigError("a writer-disjoint split needs at least two writers")
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    keep, held = next(splitter.split(np.zeros(len(w)), groups=w))
    return np.sort(keep), np.sort(held)


def writer_kfold(writers: np.ndarray, targets: np.ndarray, folds: int, seed: int
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` (train, held-out) index pairs in which every writer's images are in one fold
    only, classes kept as even as the writers allow (scikit-learn's ``StratifiedGroupKFold``).

    Raises:
        ConfigError: fewer writers than folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    w, t = np.asarray(writers), np.asarray(targets)
    n_writers = len(np.unique(w))
    if n_writers < folds:
        raise ConfigError(f"{folds} writer-disjoint folds need at least {folds} writers; the "
                          f"data has {n_writers}")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(np.sort(a), np.sort(b)) for a, b in splitter.split(np.zeros(len(t)), t, groups=w)]
