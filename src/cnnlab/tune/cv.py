"""Stratified k-fold cross-validation over a run's training data.

The pooled training set is the config's training data with ``data.val_fraction`` forced to 0;
each fold trains with :func:`~cnnlab.training.loop.fit` on k-1 parts and validates on the
held-out part. The output directory holds::

    config.toml           the resolved config (val_fraction 0)
    folds.json            the fold manifest: seed, sizes, checksums and every sample's fold
    fold-1/ ... fold-K/   ordinary run directories (model.pt, last.pt, history.csv, ...)
    cv_metrics.json       mean, standard deviation and per-fold values of every metric, and
                          the pooled out-of-fold confusion matrix
    oof_predictions.csv   every pooled image's fold, target and out-of-fold prediction
    learning_curves.png   train/validation loss and accuracy per epoch, mean ± std over folds

An interrupted cross-validation resumes with ``resume=True``: finished folds are skipped, an
interrupted fold continues from its ``last.pt``, and the manifest is checked against the data
so that no fold silently trains on another split.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import numbers
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab._io import atomic_write_bytes
from cnnlab.config import Config, dump_toml
from cnnlab.data import ImageDataset, stratified_kfold
from cnnlab.errors import ConfigError, DataError
from cnnlab.training.data import PreparedData, prepare_data
from cnnlab.training.loop import fit
from cnnlab.training.runlock import locks_run_dir

__all__ = ["MANIFEST_FORMAT", "cross_validate", "plot_learning_curves"]

log = logging.getLogger("cnnlab")

MANIFEST_FORMAT = 1
# manifest keys that must match on resume; fold_of itself is covered by its checksum
_CHECKED = ("format", "folds", "seed", "samples", "classes", "class_counts", "targets_sha256",
            "fold_of_sha256")


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.int64).tobytes()).hexdigest()


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def _pooled_data(cfg: Config, data: PreparedData | None, progress: bool) -> PreparedData:
    """The training data with no validation split: the set the folds partition."""
    if data is None:
        return prepare_data(cfg.data, seed=cfg.train.seed, progress=progress)
    if data.val is None:
        return data
    train = ImageDataset(torch.cat([data.train.images, data.val.images]),
                         torch.cat([data.train.targets, data.val.targets]),
                         list(data.classes), data.train.name, data.train.source)
    return dataclasses.replace(data, train=train, val=None)


def _check_folds(folds: int, targets: np.ndarray, classes: list[str]) -> None:
    counts = np.bincount(targets, minlength=len(classes))
    if folds > len(targets):
        raise DataError(
            f"The 'folds' setting of cross_validate ({folds}) needs at least {folds} training "
            f"images, but the pooled training set has {len(targets)}; lower it or use more data."
        )
    small = [(classes[k], int(n)) for k, n in enumerate(counts) if n < folds]
    if small:
        listed = ", ".join(f"{name!r} ({n})" for name, n in small)
        raise DataError(
            f"The 'folds' setting of cross_validate ({folds}) needs at least {folds} training "
            f"images in every class, so that each fold validates on it; too few in class "
            f"{listed}. Lower it, raise data.limit, or remove the class."
        )


def _pool_writers(cfg: Config, pool: PreparedData) -> np.ndarray:
    """group_by=writer: the NIST writer of each pooled image (MNIST train, QMNIST labels).

    Raises:
        ConfigError: data other than MNIST's training split (no writer metadata).
    """
    from cnnlab.data.qmnist import load_writers

    entry = ((pool.manifest or {}).get("splits") or {}).get("train") or {}
    if cfg.data.dataset != "mnist" or not isinstance(entry.get("indices"), list):
        raise ConfigError(f"group_by='writer' needs writer metadata, which only MNIST's "
                          f"training split has (the QMNIST labels); {cfg.data.dataset} has "
                          "none: use the default stratified folds")
    idx = np.asarray(entry["indices"], dtype=np.int64)
    labels = load_writers("train", data_dir=cfg.data.data_dir or None)
    if not np.array_equal(labels.classes[idx], pool.train.targets.numpy()):
        raise DataError("the pooled training images are not MNIST's training split in its "
                        "order; writer folds need the original order")
    return labels.writer[idx]


def _manifest(targets: np.ndarray, classes: list[str], folds: int, seed: int,
              writers: np.ndarray | None = None,
              ) -> tuple[dict[str, Any], list[tuple[np.ndarray, np.ndarray]]]:
    if writers is not None:  # group k-fold: no writer in two folds
        from cnnlab.data.qmnist import writer_kfold

        splits = writer_kfold(writers, targets, folds, seed)
    else:
        splits = stratified_kfold(targets, folds, seed)
    fold_of = np.empty(len(targets), dtype=np.int64)
    for f, (_, val_idx) in enumerate(splits):
        fold_of[val_idx] = f + 1
    manifest = {
        "format": MANIFEST_FORMAT, "folds": folds, "seed": seed, "samples": len(targets),
        "classes": list(classes),
        "class_counts": np.bincount(targets, minlength=len(classes)).tolist(),
        "targets_sha256": _sha256(targets), "fold_of_sha256": _sha256(fold_of),
        "fold_sizes": [len(v) for _, v in splits],
        "fold_of": fold_of.tolist(),  # fold (1..K) that holds out each pooled sample
    }
    if writers is not None:
        manifest["group_by"] = "writer"
        manifest["fold_writers"] = [len(np.unique(writers[v])) for _, v in splits]
    return manifest, splits


def _check_manifest(path: Path, manifest: dict[str, Any]) -> None:
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"cannot resume: {path} does not exist; is {str(path.parent)!r} a cross-validation "
            "directory? Start it without resume=True first."
        ) from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"cannot resume: {path} is not valid JSON ({e}); start a new "
                          "cross-validation in another directory") from e
    if not isinstance(saved, dict):
        raise ConfigError(f"cannot resume: {path} is not a fold manifest; start a new "
                          "cross-validation in another directory")
    if saved.get("fold_of") is not None and _sha256(np.asarray(saved["fold_of"])) != saved.get(
            "fold_of_sha256"):
        raise ConfigError(f"cannot resume: {path} has been edited (its fold checksum does "
                          "not match its folds); start a new cross-validation in another "
                          "directory")
    diffs = [k for k in _CHECKED if saved.get(k) != manifest[k]]
    if diffs:
        shown = "; ".join(f"{k}: saved {_short(saved.get(k))}, now {_short(manifest[k])}"
                          for k in diffs)
        raise ConfigError(
            f"cannot resume: the folds in {path} do not match this data and settings ({shown}). "
            "Resume with the same data, folds and seed, or start a new cross-validation in "
            "another directory."
        )


# settings that may change between an interrupted cross-validation and its resumption
_MAY_CHANGE = {"train.device", "train.threads", "data.data_dir"}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_config(path: Path, cfg: Config) -> None:
    """Refuse to resume with settings that would make the folds incomparable."""
    from cnnlab.config import load_config_file

    if not path.is_file():
        return  # interrupted before config.toml was written: nothing trained yet
    saved, now = _flatten(load_config_file(path)), _flatten(cfg.to_dict())
    diffs = sorted(k for k in saved.keys() | now.keys()
                   if k not in _MAY_CHANGE and saved.get(k) != now.get(k))
    if diffs:
        shown = "; ".join(f"{k}: saved {_short(saved.get(k))}, now {_short(now.get(k))}"
                          for k in diffs)
        raise ConfigError(
            f"cannot resume: the settings differ from those in {path} ({shown}); every fold "
            "must train the same way. Resume without changing them, or start a new "
            "cross-validation in another directory."
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 20 else text[:17] + "..."


def _remove_stale(out: Path, folds: int) -> None:
    """Before an overwrite: drop the results and the surplus folds of an earlier, larger K."""
    import re
    import shutil

    for name in ("cv_metrics.json", "learning_curves.png", "oof_predictions.csv"):
        (out / name).unlink(missing_ok=True)
    for d in out.glob("fold-*"):
        m = re.fullmatch(r"fold-(\d+)", d.name)
        if m and int(m.group(1)) > folds and d.is_dir() and (d / "config.toml").is_file():
            shutil.rmtree(d)


def _fold_data(pool: PreparedData, train_idx: np.ndarray, val_idx: np.ndarray) -> PreparedData:
    train = pool.train.subset(train_idx)
    stats = train.stats()  # normalisation from the fold's own training part, as prepare_data
    return dataclasses.replace(
        pool, train=train, val=pool.train.subset(val_idx),
        mean=tuple(round(v, 4) for v in stats.mean),
        std=tuple(round(max(v, 1e-3), 4) for v in stats.std),
    )


def _best_model_predictions(run_dir: Path, images: torch.Tensor, cfg: Config,
                            device: torch.device) -> np.ndarray:
    """Class predictions of a fold's best checkpoint (``model.pt``) for ``images``."""
    from cnnlab.inference.batched import predict_logits
    from cnnlab.inference.model import load_model

    model = load_model(run_dir, device=device)
    spec = model.classifier.input_spec
    logits = predict_logits(model.classifier, images, spec.mean, spec.std,
                            batch_size=cfg.train.eval_batch_size, device=device)
    return logits.argmax(1).numpy()


def _read_history(path: Path) -> list[dict[str, float]]:
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(f)]


def _aggregate(per_fold: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean, sample standard deviation (ddof=1) and values of every numeric metric."""
    keys = [k for k, v in per_fold[0].items()
            if isinstance(v, int | float) and not isinstance(v, bool)]
    out: dict[str, dict[str, Any]] = {}
    for k in keys:
        values = [m.get(k) for m in per_fold]
        finite = [float(v) for v in values
                  if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(finite) != len(values):  # missing or not a number in some fold
            continue
        out[k] = {"mean": statistics.fmean(finite), "std": statistics.stdev(finite),
                  "values": values}
    return out


def _band(histories: list[list[dict[str, float]]], key: str) -> tuple[np.ndarray, ...]:
    """Per-epoch mean and std of ``key`` over the folds that reached that epoch."""
    epochs = max(len(h) for h in histories)
    mean, std = np.full(epochs, np.nan), np.full(epochs, np.nan)
    for e in range(epochs):
        vals = [h[e][key] for h in histories
                if e < len(h) and math.isfinite(h[e].get(key, math.nan))]
        if vals:
            mean[e] = float(np.mean(vals))
            std[e] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return np.arange(1, epochs + 1), mean, std


def plot_learning_curves(histories: list[list[dict[str, float]]], out_path: Path) -> Path:
    """Loss and accuracy per epoch, mean ± one standard deviation across folds, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    for i, (what, title) in enumerate((("loss", "loss"), ("accuracy", "accuracy"))):
        ax = fig.add_subplot(1, 2, i + 1)
        drawn = False
        for split, color in (("train", "tab:blue"), ("val", "tab:orange")):
            epochs, mean, std = _band(histories, f"{split}_{what}")
            if np.isnan(mean).all():
                continue
            drawn = True
            ax.plot(epochs, mean, color=color, marker="o", ms=3, label=f"{split} (mean)")
            ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2,
                            label=f"{split} ± 1 std")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{title}, {len(histories)} folds")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no values recorded", ha="center", va="center",
                    transform=ax.transAxes)
    fig.tight_layout()
    tmp = out_path.with_name(out_path.name + ".tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(out_path)
    return out_path


@locks_run_dir
def cross_validate(
    config: Config,
    folds: int = 5,
    *,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    data: PreparedData | None = None,
    group_by: str = "none",
) -> dict[str, Any]:
    """Stratified ``folds``-fold cross-validation of ``config``; returns ``cv_metrics.json``.

    ``group_by="writer"`` (MNIST only) makes the folds writer-disjoint: every NIST writer's
    digits (QMNIST labels) are held out by one fold, so validation measures new writers, as
    the test split does.

    With ``data``, its training and validation sets are pooled; otherwise the config's data
    is loaded with ``data.val_fraction = 0``. Every fold keeps the test set, so the per-fold
    test figures are aggregated too. The folds depend only on the pooled targets, ``folds``
    and ``train.seed``.

    Raises:
        ConfigError: ``folds`` not an int >= 2; ``out_dir`` already holding a
            cross-validation without ``resume`` or ``overwrite``; ``resume`` with a missing or
            mismatching fold manifest.
        DataError: fewer training images of some class than folds.
    """
    if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) or folds < 2:
        raise ConfigError(
            f"The 'folds' parameter of cross_validate must be an int >= 2. Got {folds!r} instead."
        )
    folds = int(folds)
    if group_by not in ("none", "writer"):
        raise ConfigError(f"The 'group_by' parameter of cross_validate must be one of none, "
                          f"writer. Got {group_by!r} instead.")
    cfg = dataclasses.replace(config, data=dataclasses.replace(config.data, val_fraction=0.0))
    cfg = cfg.validate()
    out = Path(out_dir)
    manifest_path = out / "folds.json"
    if not resume and not overwrite and manifest_path.exists():
        raise ConfigError(
            f"{out} already holds a cross-validation; set resume=True to continue it, "
            "overwrite=True to replace it, or choose another directory"
        )

    pool = _pooled_data(cfg, data, progress)
    targets = pool.train.targets.numpy().astype(np.int64)
    _check_folds(folds, targets, pool.classes)
    writers = _pool_writers(cfg, pool) if group_by == "writer" else None
    manifest, splits = _manifest(targets, pool.classes, folds, cfg.train.seed, writers)
    if resume:
        _check_manifest(manifest_path, manifest)
        _check_config(out / "config.toml", cfg)
    out.mkdir(parents=True, exist_ok=True)
    if overwrite and not resume:
        _remove_stale(out, folds)
    _write_text(out / "config.toml", dump_toml(cfg.to_dict()))
    if not resume:
        _write_text(manifest_path, json.dumps(manifest) + "\n")

    from cnnlab.device import resolve_device

    device = resolve_device(cfg.train.device)
    per_fold: list[dict[str, Any]] = []
    histories: list[list[dict[str, float]]] = []
    oof_preds = np.full(len(targets), -1, dtype=np.int64)
    for f, (train_idx, val_idx) in enumerate(splits, start=1):
        fold_dir = out / f"fold-{f}"
        done = (fold_dir / "metrics.json").is_file() and (fold_dir / "model.pt").is_file()
        if resume and done:
            log.info("fold %d/%d already finished; skipping it", f, folds)
        else:
            again = resume and (fold_dir / "last.pt").is_file()
            log.info("fold %d/%d: %s on %d images, validating on %d", f, folds,
                     "resuming" if again else "training", len(train_idx), len(val_idx))
            fit(cfg, out_dir=fold_dir, resume=again, overwrite=overwrite and not again,
                progress=progress, data=_fold_data(pool, train_idx, val_idx))
        per_fold.append(json.loads((fold_dir / "metrics.json").read_text()))
        histories.append(_read_history(fold_dir / "history.csv"))
        oof_preds[val_idx] = _best_model_predictions(fold_dir, pool.train.images[val_idx], cfg,
                                                     device)

    from cnnlab.evaluate import classification_report

    report = classification_report(targets, oof_preds, pool.classes)
    result: dict[str, Any] = {
        "folds": folds, "seed": cfg.train.seed, "model": cfg.model.name,
        "recipe": cfg.recipe, "dataset": cfg.data.dataset, "samples": len(targets),
        "group_by": group_by,
        "metrics": _aggregate(per_fold),
        "out_of_fold": {"accuracy": report["accuracy"],
                        "macro_f1": report["macro"]["f1"],
                        "images": len(targets), "classes": list(pool.classes),
                        "confusion_matrix": report["confusion_matrix"]},
    }
    _write_text(out / "cv_metrics.json", json.dumps(result, indent=2) + "\n")
    fold_of = np.asarray(manifest["fold_of"])
    lines = ["index,fold,target,prediction"] + [
        f"{i},{f},{t},{p}" for i, (f, t, p) in enumerate(zip(fold_of, targets, oof_preds,
                                                              strict=True))]
    _write_text(out / "oof_predictions.csv", "\n".join(lines) + "\n")
    plot_learning_curves(histories, out / "learning_curves.png")
    return result
