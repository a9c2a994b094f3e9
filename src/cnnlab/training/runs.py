"""Find and summarise run directories, for ``cnnlab runs``: compare experiments without a notebook.

A run directory is one that holds any of ``config.toml``, ``metrics.json``, ``last.pt`` or
``model.pt`` (what :func:`cnnlab.training.loop.fit` writes); a cross-validation directory
holds ``folds.json`` and its folds are listed as runs of their own. Runs that are unfinished or
unreadable are listed with that status instead of failing the whole listing. A directory
with a ``model.pt`` alone (a tuning trial's, ``trials/0007/model.pt``) is a finished model:
its figures come from the checkpoint itself.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from cnnlab.errors import ConfigError, close_names

__all__ = ["COLUMNS", "find_runs", "list_runs", "run_summary", "sort_runs"]

# the keys of every summary, in display order; --sort takes any of them
COLUMNS = ("name", "status", "model", "recipe", "dataset", "epochs", "epochs_run",
           "val_accuracy", "test_accuracy", "train_time_s", "date")
_MARKERS = ("config.toml", "metrics.json", "last.pt", "model.pt", "folds.json")


def find_runs(root: str | Path) -> list[Path]:
    """Run and cross-validation directories under ``root`` (``root`` itself included), sorted.

    Hidden directories are skipped; a run directory's subdirectories are not searched, except
    the folds of a cross-validation.

    Raises:
        ConfigError: ``root`` does not exist or is not a directory.
    """
    base = Path(root)
    if not base.exists():
        raise ConfigError(
            f"runs directory {str(base)!r} does not exist; pass the directory that holds your "
            "run directories, e.g. `cnnlab runs runs` (train writes to runs/NAME by default)"
        )
    if not base.is_dir():
        raise ConfigError(f"{str(base)!r} is a file, not a directory of runs")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = set(filenames)
        if names & set(_MARKERS):
            found.append(Path(dirpath))
            if "folds.json" not in names:
                dirnames[:] = []  # a plain run: its subfolders (figures, logs) are no runs
    return sorted(found)


def _read_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def _mtime(*paths: Path) -> str | None:
    times = [p.stat().st_mtime for p in paths if p.exists()]
    if not times:
        return None
    return dt.datetime.fromtimestamp(max(times), tz=dt.UTC).strftime("%Y-%m-%d %H:%M")


def _history_rows(path: Path) -> int | None:
    try:
        with path.open(newline="") as f:
            return sum(1 for _ in csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return None


def run_summary(run_dir: str | Path, root: str | Path | None = None) -> dict[str, Any]:
    """One row of ``cnnlab runs``: the keys of :data:`COLUMNS` plus ``path`` and ``problem``.

    ``status`` is ``done`` (metrics.json present), ``incomplete`` (interrupted or still
    running), ``broken`` (an unreadable config.toml or metrics.json; ``problem`` says why),
    ``cv`` (a finished cross-validation, accuracies are means over folds) or
    ``cv-incomplete``. Never raises for a bad run directory.
    """
    d = Path(run_dir)
    name = d.relative_to(root).as_posix() if root is not None else d.name
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(name=name if name != "." else d.resolve().name, path=str(d), problem=None)
    cv = (d / "folds.json").is_file()
    problems: list[str] = []
    config: dict[str, Any] = {}
    try:
        if (d / "config.toml").is_file():
            config = _read_toml(d / "config.toml")
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        problems.append(f"config.toml unreadable: {e}")
    metrics_file = d / ("cv_metrics.json" if cv else "metrics.json")
    metrics: dict[str, Any] | None = None
    if metrics_file.is_file():
        try:
            loaded = json.loads(metrics_file.read_text())
            if not isinstance(loaded, dict):
                raise ValueError("not a JSON object")
            metrics = loaded
        except (OSError, ValueError, UnicodeDecodeError) as e:
            problems.append(f"{metrics_file.name} unreadable: {e}")
    checkpoint_only = (not cv and metrics is None and not config and not problems
                       and (d / "model.pt").is_file()
                       and not any((d / n).exists() for n in ("last.pt", "history.csv")))
    if checkpoint_only:  # written whole at the end (a tuning trial's): read its own record
        try:
            config, metrics = _checkpoint_record(d / "model.pt")
        except Exception as e:  # any unreadable file is listed, never raised
            problems.append(f"model.pt unreadable: {e}")
    if config:
        tables: list[dict[str, Any]] = []
        for k in ("model", "data", "train"):
            table = config.get(k)
            tables.append(table if isinstance(table, dict) else {})
        model, data, train = tables
        row["model"] = model.get("name")
        row["recipe"] = config.get("recipe") or None
        row["dataset"] = data.get("dataset")
        row["epochs"] = train.get("epochs")
    if cv and metrics is not None:
        means = metrics.get("metrics", {})

        def mean(key: str) -> Any:
            entry = means.get(key)
            return entry.get("mean") if isinstance(entry, dict) else None

        row["val_accuracy"], row["test_accuracy"] = mean("val_accuracy"), mean("test_accuracy")
        times = (means.get("train_time_s") or {}).get("values")
        row["train_time_s"] = round(sum(times), 3) if times else None
        row["epochs_run"] = mean("epochs_run")
    elif metrics is not None:
        for key in ("val_accuracy", "test_accuracy", "train_time_s", "epochs_run"):
            row[key] = metrics.get(key)
    else:
        row["epochs_run"] = _history_rows(d / "history.csv")
    if problems:
        row["status"], row["problem"] = "broken", "; ".join(problems)
    elif cv:
        row["status"] = "cv" if metrics is not None else "cv-incomplete"
    else:
        row["status"] = "done" if metrics is not None else "incomplete"
    row["date"] = _mtime(metrics_file, d / "config.toml", d / "last.pt",
                         *([d / "model.pt"] if checkpoint_only else []))
    return row


def _checkpoint_record(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config and metrics a checkpoint holds."""
    from cnnlab.inference.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    config, metrics = ckpt.get("config"), ckpt.get("metrics")
    return (config if isinstance(config, dict) else {},
            metrics if isinstance(metrics, dict) else {})


def sort_runs(rows: list[dict[str, Any]], key: str = "date", *, reverse: bool = False
              ) -> list[dict[str, Any]]:
    """Rows sorted by ``key``; rows without a value for it always come last.

    Raises:
        ConfigError: ``key`` is not a column.
    """
    if key not in COLUMNS:
        close = close_names(key, COLUMNS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"cannot sort runs by {key!r}{hint}; sort keys: {', '.join(COLUMNS)}"
        )
    present = [r for r in rows if r.get(key) is not None]
    missing = [r for r in rows if r.get(key) is None]

    def value(r: dict[str, Any]) -> tuple[int, Any]:
        v = r[key]
        return (0, float(v)) if isinstance(v, int | float) else (1, str(v))

    return sorted(present, key=value, reverse=reverse) + missing


def list_runs(root: str | Path = "runs", *, sort: str = "date", reverse: bool = False
              ) -> list[dict[str, Any]]:
    """Summaries of every run under ``root``, sorted by ``sort``.

    Raises:
        ConfigError: ``root`` is missing or not a directory, or ``sort`` is not a column.
    """
    if sort not in COLUMNS:
        sort_runs([], sort)  # the same message before any disk work
    base = Path(root)
    rows = [run_summary(d, base) for d in find_runs(base)]
    return sort_runs(rows, sort, reverse=reverse)
