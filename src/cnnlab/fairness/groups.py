"""The groups of an evaluation: who wrote each image, or an attribute measured from it, or a
user's own ``path,group`` file.

``--group`` takes:

- ``population``: the NIST writer population (high-school students, Census Bureau employees)
  from the QMNIST labels; MNIST's own train or test split only;
- ``writer``: each NIST writer a group (the per-writer breakdown);
- ``derived:thickness|slant|size|ink``: quantile groups of an attribute measured from the image
  in MNIST form (:mod:`cnnlab.fairness.attributes`): any digit data;
- ``FILE.csv``: rows of ``path,group`` for an image folder, paths relative to the folder
  evaluated (``3/a.png``); every image must be listed and every row must name one.

Where writers are known (MNIST), they are the bootstrap's clusters for every kind of group;
elsewhere each image is its own cluster.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnlab.data import ImageDataset, list_image_folder
from cnnlab.errors import ConfigError, DataError, unknown_name
from cnnlab.fairness.attributes import ATTRIBUTES, digit_attributes, quantile_groups

__all__ = ["GROUP_KINDS", "Groups", "read_group_file", "resolve_groups"]

GROUP_KINDS = ("population", "writer", *(f"derived:{a}" for a in ATTRIBUTES))
MAX_GROUP_FILE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Groups:
    """A group per image of an evaluation, in the dataset's order."""

    kind: str  # population | writer | derived:<attribute> | file
    labels: np.ndarray = field(repr=False)  # str (N,)
    order: list[str]  # the groups in report order
    description: str
    writers: np.ndarray | None = field(default=None, repr=False)  # (N,) writer ids, if known
    attribute: np.ndarray | None = field(default=None, repr=False)  # derived: the values


def _mnist_writers(ds: ImageDataset, name: str, split: str, data_dir: str | None
                   ) -> np.ndarray | None:
    """The writer ids of MNIST's train or test split in order, or None for other data."""
    from cnnlab.data.qmnist import MNIST_ROWS, load_writers

    if name != "mnist" or split not in MNIST_ROWS or len(ds) != MNIST_ROWS[split]:
        return None
    labels = load_writers(split, data_dir=data_dir)
    labels.check_targets(ds.targets.numpy())
    return labels.writer


def resolve_groups(spec: str, ds: ImageDataset, *, name: str, split: str,
                   data_dir: str | None = None, folder: Path | None = None,
                   bins: int = 4) -> Groups:
    """The groups ``spec`` names for the images of ``ds``.

    Args:
        spec: a kind of :data:`GROUP_KINDS` or a path to a ``.csv`` group file.
        ds: the evaluated images (in the model's input form) and labels.
        name, split: where they came from (``mnist`` / ``test`` has writer metadata).
        data_dir: where the QMNIST labels are (default: as for the MNIST files).
        folder: the image folder ``ds`` was read from (needed for a group file).
        bins: quantile groups of a derived attribute.

    Raises:
        ConfigError: an unknown kind (with the close names).
        DataError: writer groups for data without writer metadata; a group file that does not
            match the folder.
    """
    from cnnlab.data.qmnist import POPULATIONS, load_writers

    writers = _mnist_writers(ds, name, split, data_dir)
    if spec.endswith(".csv") or Path(spec).is_file():
        if folder is None:
            raise DataError(f"a group file ({spec}) needs an image folder to match its paths: "
                            "evaluate a folder with --data-dir FOLDER")
        labels = read_group_file(Path(spec), folder, len(ds))
        return Groups("file", labels, sorted(set(labels.tolist())), f"groups from {spec}",
                      writers)
    if spec not in GROUP_KINDS:
        raise ConfigError(unknown_name("group", spec, [*GROUP_KINDS, "FILE.csv"]))
    if spec.startswith("derived:"):
        attr = spec.split(":", 1)[1]
        values = digit_attributes(ds.images.numpy())[attr]
        labels, order = quantile_groups(values, bins, name=attr)
        return Groups(spec, labels, order, f"{attr} ({ATTRIBUTES[attr]}) in {len(order)} "
                      "quantile groups, measured on the image in the model's input form",
                      writers, values)
    if writers is None:
        raise DataError(f"--group {spec} needs writer metadata, which only MNIST's own train "
                        f"and test splits have (the QMNIST labels); {name} {split} has none: "
                        "use --group derived:thickness (slant, size, ink) or a path,group CSV")
    if spec == "population":
        assert split in ("train", "test")
        population = load_writers(split, data_dir=data_dir).population
        return Groups(spec, population, list(POPULATIONS),
                      "NIST writer population: " + ", ".join(
                          f"{k} = {v[0]}" for k, v in POPULATIONS.items()), writers)
    labels = np.array([str(w) for w in writers])
    return Groups(spec, labels, sorted(set(labels.tolist()), key=int),
                  f"each NIST writer ({len(set(labels.tolist()))}) a group", writers)


def read_group_file(path: Path, folder: Path, expected: int | None = None) -> np.ndarray:
    """The group of each image of ``folder`` (in :func:`list_image_folder`'s order) from a CSV
    of ``path,group`` rows (a header row ``path,group`` is optional).

    Raises:
        DataError: an unreadable file, a row without two fields or with an empty group, a path
            listed twice with two groups, images the file does not cover or rows naming files
            not in the folder (both with counts and the first few names).
    """
    if not path.is_file():
        raise DataError(f"group file {path} does not exist; pass a CSV of path,group rows")
    if path.stat().st_size > MAX_GROUP_FILE_BYTES:
        raise DataError(f"group file {path} is larger than {MAX_GROUP_FILE_BYTES >> 20} MiB")
    listing = list_image_folder(_class_root(folder))
    if expected is not None and len(listing) != expected:
        raise DataError(f"{folder} lists {len(listing)} images but {expected} were evaluated; "
                        "pass the folder that was evaluated")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"group file {path} is not readable UTF-8 text ({e})") from e
    groups: dict[str, str] = {}
    for line_no, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or all(not c.strip() for c in row):
            continue
        if line_no == 1 and [c.strip().lower() for c in row[:2]] == ["path", "group"]:
            continue
        if len(row) < 2 or not row[1].strip():
            raise DataError(f"{path}, line {line_no}: expected 'path,group' with a non-empty "
                            f"group; got {','.join(row)!r}")
        key = _norm(row[0])
        group = row[1].strip()
        if groups.get(key, group) != group:
            raise DataError(f"{path}, line {line_no}: {key} is listed twice, as "
                            f"{groups[key]!r} and {group!r}")
        groups[key] = group
    paths = [_norm(p) for p in listing.paths]
    known = set(paths)
    missing = [p for p in paths if p not in groups]
    unknown = [p for p in groups if p not in known]
    problems = []
    if missing:
        problems.append(f"{len(missing)} of the {len(paths)} images in {listing.root} have no "
                        f"row (first: {', '.join(missing[:3])})")
    if unknown:
        problems.append(f"{len(unknown)} rows name files that are not images in "
                        f"{listing.root} (first: {', '.join(unknown[:3])})")
    if problems:
        raise DataError(f"group file {path} does not match the evaluated images: "
                        + "; ".join(problems) + ". Give one 'path,group' row per image, paths "
                        "relative to the folder (as CLASS/FILE)")
    return np.array([groups[p] for p in paths])


def _class_root(folder: Path) -> Path:
    """The folder whose class subfolders were evaluated (``test/`` of a split folder)."""
    if (folder / "test").is_dir():
        return folder / "test"
    return folder


def _norm(p: str) -> str:
    return p.strip().replace("\\", "/").removeprefix("./")


def check_kind(spec: str) -> None:
    """Raise ConfigError for a ``--group`` that is neither a kind nor a ``.csv`` path."""
    if spec in GROUP_KINDS or spec.endswith(".csv") or Path(spec).is_file():
        return
    raise ConfigError(unknown_name("group", spec, [*GROUP_KINDS, "FILE.csv"]))
