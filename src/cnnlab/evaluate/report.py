"""The evaluation report of a trained model: every metric, efficiency figures and plots, written
as ``metrics.json`` (an ``evaluation`` section next to the training figures), ``report.md`` and
one self-contained ``report.html`` that opens offline with its figures embedded.

Both documents open with a short model card: data, recipe and model, headline metrics with
95 % intervals, efficiency and known limits. For the MNIST test split the accuracy is also broken
down by writer population (students and Census Bureau employees, from the QMNIST writer
labels: :mod:`cnnlab.evaluate.writers`), with the gap and its writer-bootstrap interval.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import platform
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.data import ImageDataset
from cnnlab.errors import ConfigError, DataError
from cnnlab.evaluate.documents import PLOT_TITLES, html_page, markdown, model_card
from cnnlab.evaluate.writers import MNIST_WRITER_GROUPS, writer_groups

__all__ = ["MNIST_WRITER_GROUPS", "PLOT_TITLES", "build_report", "compare_engines",
           "most_confused_pairs", "writer_groups"]

log = logging.getLogger("cnnlab")

# --- pieces that need no model -------------------------------------------------------------------

def most_confused_pairs(cm: Any, classes: list[str], top: int = 10) -> list[tuple[str, str, int]]:
    """The ``top`` largest off-diagonal cells of a confusion matrix as (true, predicted, count),
    largest first; empty cells are left out."""
    arr = np.array(cm, dtype=np.int64)
    np.fill_diagonal(arr, 0)
    order = np.argsort(-arr, axis=None, kind="stable")[:top]
    out = []
    for flat in order:
        i, j = divmod(int(flat), arr.shape[1])
        if arr[i, j] > 0:
            out.append((classes[i], classes[j], int(arr[i, j])))
    return out


# --- loading -------------------------------------------------------------------------------------

def _is_packaged_default(path: Path) -> bool:
    from cnnlab.inference.checkpoint import default_model_path

    try:
        return path.resolve() == default_model_path().resolve()
    except OSError:
        return False


def _run_dir_of(source: Path) -> Path:
    return source if source.is_dir() else source.parent


def _read_history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "history.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not valid JSON ({e}); move it away to have it rewritten") from e
    return data if isinstance(data, dict) else {}


def _slug(name: str) -> str:
    """A folder name for evaluations on ``name`` (a dataset name or a path)."""
    import re

    base = Path(name).name or "data"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "data"


def compare_engines(checkpoint: str | Path, ds: ImageDataset, engines: list[str], *,
                    device: Any = "cpu", batch_size: int = 1000) -> list[dict[str, Any]]:
    """Accuracy of each engine on the same images, and its top-1 agreement with PyTorch: an
    INT8 difference is visible instead of a silent disagreement between commands. An engine
    that cannot run the model gets a row with its error."""
    from cnnlab.deploy.engine import load_with_engine
    from cnnlab.errors import CnnlabError

    rows: list[dict[str, Any]] = []
    reference = None
    for name in ["torch", *[e for e in engines if e != "torch"]]:
        try:
            logits = load_with_engine(checkpoint, device=device, engine=name).logits(
                ds.images, batch_size=batch_size)
        except CnnlabError as e:
            rows.append({"engine": name, "error": str(e)})
            continue
        preds = logits.argmax(1)
        if reference is None:
            reference = preds
        rows.append({"engine": name,
                     "accuracy": float((preds == ds.targets).double().mean()),
                     "agreement_with_torch": float((preds == reference).double().mean()),
                     "disagreements": int((preds != reference).sum())})
    return rows


# --- the report ----------------------------------------------------------------------------------

def build_report(
    run_dir_or_checkpoint: str | Path,
    *,
    dataset: str | ImageDataset | None = None,
    data_dir: str | Path | None = None,
    split: str = "test",
    device: str | torch.device = "cpu",
    out_dir: str | Path | None = None,
    source: Any = None,
    engine: str = "torch",
    engines: Any = (),
    batch_size: int = 1000,
    n_boot: int = 1000,
    latency_runs: int = 100,
    throughput_batch_size: int = 1000,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a trained model and write its report.

    Args:
        run_dir_or_checkpoint: a run directory (with ``model.pt``) or a checkpoint file.
        dataset: a dataset name, an image folder, or an :class:`ImageDataset` already in memory;
            default: the one the model was trained on.
        data_dir: where the dataset files are (default: the training run's).
        split: ``"train"`` or ``"test"``.
        device: where to run the model (``auto``, ``cpu``, ``cuda``).
        out_dir: where to write ``report.html``, ``report.md``, ``metrics.json`` and ``plots/``;
            default: the run directory (the checkpoint's folder) for the run's own data, and
            ``RUN/eval/<data name>/`` for other data, so the run's own report stays.
        source: the :class:`~cnnlab.training.data.SplitSource` of an in-memory ``dataset``.
        engine: what computes the logits (``torch``, ``onnx``, ``int8``, ``auto``): the same
            engine as ``predict`` for the same choice.
        engines: other engines to compare on the same images (accuracy, top-1 agreement).
        batch_size: the evaluation batch size.
        n_boot: bootstrap resamples for the intervals.
        latency_runs, throughput_batch_size: the inference timing's batch-1 runs and large batch.
        progress: show progress while loading data.

    Returns:
        The ``evaluation`` section written to ``metrics.json``, with ``files`` (the paths written).

    Raises:
        CheckpointError: a missing or unreadable checkpoint or run directory.
        ConfigError: an invalid ``split`` or ``batch_size``.
        DataError, DatasetNotFoundError: missing data, or data that does not fit the model.
    """
    import torch.nn.functional as F

    from cnnlab.deploy.engine import load_with_engine
    from cnnlab.device import resolve_device
    from cnnlab.evaluate import (
        balanced_accuracy,
        bootstrap_ci,
        classification_report,
        expected_calibration_error,
        log_loss,
        measure_inference,
        roc_auc,
        roc_curves,
        top_k_accuracy,
    )
    from cnnlab.models.summary import summarize
    from cnnlab.training.data import SPLITS, SplitSource, load_split

    if split not in SPLITS:
        raise ConfigError(f"The 'split' parameter of build_report must be one of "
                          f"{', '.join(SPLITS)}. Got {split!r} instead.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"The 'batch_size' parameter of build_report must be an int >= 1. "
                          f"Got {batch_size!r} instead.")
    dev = resolve_device(str(device))
    path = Path(run_dir_or_checkpoint)
    # raises CheckpointError for a missing run or file
    model = load_with_engine(path, device=dev, engine=engine)
    ckpt_path = Path(model.path) if model.path else path
    run_dir = _run_dir_of(ckpt_path)
    if isinstance(dataset, ImageDataset):  # already in the model's input form
        from cnnlab.training.data import check_split

        ds = check_split(dataset, dataset.name or "dataset", list(model.classes),
                         model.input_spec.shape)
        name = dataset.name or "dataset"
        src = source if source is not None else SplitSource(name, split, "own",
                                                            f"{name} {split} split")
    else:
        ds, src = load_split(model, split, dataset=dataset,
                             data_dir=None if data_dir is None else str(data_dir),
                             progress=progress)
    name = src.name
    if out_dir is not None:
        out = Path(out_dir)
    elif _is_packaged_default(ckpt_path):
        out = Path("runs") / "default"  # never write into the installed package
    else:
        out = run_dir
    if out_dir is None and src.origin == "external":
        out = out / "eval" / _slug(name)  # never over the run's own report and metrics
    spec, classes = model.input_spec, list(model.classes)
    k = len(classes)

    logits = model.logits(ds.images, batch_size=batch_size)
    probs = F.softmax(logits.double(), dim=1).numpy()  # float64: rows sum to 1 within 1e-12
    targets = ds.targets.numpy()
    preds = probs.argmax(axis=1)

    caught: list[str] = []
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        report = classification_report(targets, preds, classes)
        acc, acc_low, acc_high = bootstrap_ci(targets, preds, "accuracy", n_boot)
        f1, f1_low, f1_high = bootstrap_ci(targets, preds, "macro_f1", n_boot)
        ece, bins = expected_calibration_error(targets, probs)
        # roc_auc has one return type for every ``average``: None gives (K,) areas, else a float
        auc_per_class = (np.asarray(roc_auc(targets, probs, average=None)) if k > 1
                         else np.array([]))
        auc_macro = float(roc_auc(targets, probs, "macro")) if k > 1 else math.nan
        auc_micro = float(roc_auc(targets, probs, "micro")) if k > 1 else math.nan
        curves = roc_curves(targets, probs) if k > 1 else []
    for r in records:  # degenerate-but-valid cases: reported, not fatal
        message = str(r.message)
        if message not in caught:
            caught.append(message)
            log.warning("report: %s", message)
    topk = min(3, k)
    evaluation: dict[str, Any] = {
        "checkpoint": str(ckpt_path),
        "dataset": name,
        "split": src.split,
        "data": src.detail,
        "origin": src.origin,
        "engine": model.engine,
        "samples": len(ds),
        "classes": classes,
        "accuracy": acc,
        "accuracy_ci": [acc_low, acc_high],
        "macro_f1": f1,
        "macro_f1_ci": [f1_low, f1_high],
        "confidence_level": 0.95,
        "balanced_accuracy": balanced_accuracy(targets, preds, k),
        f"top{topk}_accuracy": top_k_accuracy(targets, probs, topk),
        "log_loss": log_loss(targets, probs),
        "roc_auc_macro": auc_macro,
        "roc_auc_micro": auc_micro,
        "roc_auc_per_class": dict(zip(classes, map(float, auc_per_class), strict=True)),
        "ece": ece,
        "macro": report["macro"],
        "weighted": report["weighted"],
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"],
        "most_confused": [{"true": a, "predicted": b, "count": n}
                          for a, b, n in most_confused_pairs(report["confusion_matrix"], classes)],
        "warnings": caught,
    }
    if engines:
        evaluation["engines"] = compare_engines(ckpt_path, ds, list(engines), device=dev,
                                                batch_size=batch_size)
    if name == "mnist" and src.split == "test" and len(ds) == 10000:
        try:  # the groups come from the QMNIST labels, shipped beside MNIST in data/qmnist
            evaluation["writer_groups"] = writer_groups(
                targets, preds, n_boot=n_boot,
                data_dir=str(data_dir) if data_dir is not None
                else model.config.get("data", {}).get("data_dir") or None)
        except DataError as e:  # labels not found, or not MNIST's test split in its order
            caught.append(f"no writer groups: {e}")
            log.warning("report: no writer groups: %s", e)

    # efficiency
    training = {k: v for k, v in _read_json(run_dir / "metrics.json").items()
                if k != "evaluation"}
    history = _read_history(run_dir)
    train_time = training.get("train_time_s", model.metrics.get("train_time_s"))
    if train_time is None and history:
        train_time = round(sum(float(r.get("epoch_time_s") or 0) for r in history), 3)
    summary = summarize(model.classifier, device=dev)
    timing = measure_inference(model.classifier, spec.shape, device=dev,
                               latency_runs=latency_runs,
                               batch_size=max(1, throughput_batch_size), throughput_runs=3)
    evaluation["efficiency"] = {
        **timing,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "train_time_s": train_time,
        "parameters": summary.total_params,
        "macs": summary.total_macs,
        "checkpoint_mb": round(ckpt_path.stat().st_size / 2**20, 3) if ckpt_path.is_file()
        else None,
    }

    # figures
    from cnnlab.evaluate import plots

    plot_dir = out / "plots"
    conf = probs.max(axis=1)
    wrong = np.flatnonzero(preds != targets)
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")][:16]
    sample = np.arange(min(32, len(ds)))
    images = ds.images.numpy()
    files: dict[str, Path] = {
        "confusion_matrix": plots.plot_confusion_matrix(
            report["confusion_matrix"], classes, plot_dir / "confusion_matrix.png"),
        "per_class_f1": plots.plot_per_class_f1(
            {c: v["f1"] for c, v in report["per_class"].items()},
            plot_dir / "per_class_f1.png", macro_f1=report["macro"]["f1"]),
        "reliability": plots.plot_reliability(bins, plot_dir / "reliability.png", ece=ece),
        "sample_grid": plots.plot_sample_grid(
            images[sample], targets[sample], preds[sample], classes, plot_dir / "sample_grid.png"),
        "confident_mistakes": plots.plot_confident_mistakes(
            images[wrong], targets[wrong], preds[wrong], conf[wrong], classes,
            plot_dir / "confident_mistakes.png"),
        "confused_pairs": plots.plot_confused_pairs(
            [(m["true"], m["predicted"], m["count"]) for m in evaluation["most_confused"]],
            plot_dir / "confused_pairs.png"),
    }
    if curves:
        files["roc_curves"] = plots.plot_roc_curves(
            curves, list(auc_per_class), classes, plot_dir / "roc_curves.png", micro_auc=auc_micro)
    if history:
        files["training_curves"] = plots.plot_training_curves(
            history, plot_dir / "training_curves.png")
    files = {key: files[key] for key in PLOT_TITLES if key in files}  # a stable order
    evaluation["plots"] = {key: str(p.relative_to(out)) for key, p in files.items()}

    card = model_card(model, evaluation, training, history)
    evaluation["model_card"] = card
    from cnnlab._io import atomic_write_text, clean_json

    merged = _read_json(out / "metrics.json")
    if not merged and out != run_dir and src.origin != "external":
        merged = dict(training)  # a report elsewhere still carries the training figures
    merged["evaluation"] = clean_json(evaluation)
    metrics_text = json.dumps(merged, indent=2) + "\n"
    from cnnlab.evaluate.sections import read_sections

    sections = read_sections(out)  # robustness, explanations, fairness: kept across rebuilds
    md_text = markdown(evaluation, sections)
    html_text = html_page(evaluation, files, sections, base=out)
    paths = {"metrics": out / "metrics.json", "markdown": out / "report.md",
             "html": out / "report.html"}
    for key, text in (("metrics", metrics_text), ("markdown", md_text), ("html", html_text)):
        atomic_write_text(paths[key], text)
    result = clean_json(evaluation)
    result["files"] = {**{k: str(v) for k, v in paths.items()},
                       "plots": {k: str(v) for k, v in files.items()}}
    return result
