"""Classification metrics on label tensors/arrays: accuracy, confusion matrix, per-class
precision, recall and F1 with macro and weighted averages.

Degenerate cases follow scikit-learn's ``zero_division``: a class never predicted (or never
present) gets 0 for the undefined figure and an :class:`UndefinedMetricWarning`.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from cnnlab.errors import ShapeError

__all__ = ["UndefinedMetricWarning", "accuracy", "classification_report", "confusion_matrix"]


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for some class (e.g. precision of a class never predicted)."""


def _as_array(x: Any, name: str) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 1:
        raise ShapeError(f"The '{name}' parameter must be a 1-D array of labels. "
                         f"Got shape {arr.shape} instead.")
    return arr.astype(np.int64, copy=False)


def _pair(targets: Any, preds: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = _as_array(targets, "targets"), _as_array(preds, "preds")
    if len(t) != len(p):
        raise ShapeError(f"targets and preds must have the same length; got {len(t)} and {len(p)}")
    return t, p


def accuracy(targets: Any, preds: Any) -> float:
    """Fraction of predictions equal to the targets."""
    t, p = _pair(targets, preds)
    return float((t == p).mean()) if len(t) else float("nan")


def confusion_matrix(targets: Any, preds: Any, num_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of samples of true class ``i`` predicted as ``j``.

    Raises:
        ShapeError: label arrays of different lengths.
        ValueError: a label outside ``[0, num_classes)``.
    """
    t, p = _pair(targets, preds)
    for name, arr in (("targets", t), ("preds", p)):
        if len(arr) and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"The '{name}' labels must lie in [0, {num_classes}). "
                             f"Got values from {arr.min()} to {arr.max()} instead.")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(
        num_classes, num_classes)


def _safe_div(num: np.ndarray, den: np.ndarray, what: str, classes: list[str]) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    if not ok.all():
        bad = [classes[i] for i in np.flatnonzero(~ok)]
        warnings.warn(f"{what} is undefined for class(es) {bad} and set to 0.0",
                      UndefinedMetricWarning, stacklevel=3)
    return out


def classification_report(
    targets: Any, preds: Any, classes: list[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro and weighted averages and the
    confusion matrix, as plain Python values ready for JSON."""
    k = len(classes)
    cm = confusion_matrix(targets, preds, k)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    precision = _safe_div(tp, predicted, "precision (no predicted samples)", classes)
    recall = _safe_div(tp, support, "recall (no true samples)", classes)
    pr = precision + recall
    f1 = np.where(pr > 0, 2 * precision * recall / np.where(pr > 0, pr, 1), 0.0)
    total = support.sum()
    per_class = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]),
               "f1": float(f1[i]), "support": int(support[i])}
        for i, name in enumerate(classes)
    }
    weights = support / total if total else np.zeros(k)
    return {
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "macro": {"precision": float(precision.mean()), "recall": float(recall.mean()),
                  "f1": float(f1.mean())},
        "weighted": {"precision": float((precision * weights).sum()),
                     "recall": float((recall * weights).sum()),
                     "f1": float((f1 * weights).sum())},
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "samples": int(total),
    }
