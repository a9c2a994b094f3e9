"""Classification metrics on label and probability tensors/arrays: accuracy, balanced and top-k
accuracy, confusion matrices, per-class precision, recall, F1 and specificity with macro and
weighted averages, one-vs-rest ROC curves and AUC, log loss, calibration error, bootstrap
confidence intervals and McNemar's test for comparing two classifiers.

Labels are 1-D integer arrays or tensors; probabilities are ``(N, K)`` arrays or tensors whose
rows sum to 1 (apply softmax to logits first). Degenerate cases follow scikit-learn's
``zero_division``: a class never predicted (or never present) gets 0 for the undefined figure
and an :class:`UndefinedMetricWarning`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import numpy as np
import torch

from cnnlab.errors import ShapeError

__all__ = [
    "UndefinedMetricWarning",
    "accuracy",
    "balanced_accuracy",
    "bootstrap_ci",
    "classification_report",
    "confusion_matrix",
    "expected_calibration_error",
    "log_loss",
    "mcnemar",
    "normalized_confusion_matrix",
    "roc_auc",
    "roc_curves",
    "top_k_accuracy",
]


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for some class (e.g. precision of a class never predicted)."""


def _to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _as_array(x: Any, name: str) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.ndim != 1:
        raise ShapeError(f"The '{name}' parameter must be a 1-D array of labels. "
                         f"Got shape {arr.shape} instead.")
    return arr.astype(np.int64, copy=False)


def _pair(targets: Any, preds: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = _as_array(targets, "targets"), _as_array(preds, "preds")
    if len(t) != len(p):
        raise ShapeError(f"targets and preds must have the same length; got {len(t)} and {len(p)}")
    return t, p


# --- validation shared by the functions below: one message form, naming the function ----------

def _labels(x: Any, name: str, func: str) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.ndim != 1:
        raise ShapeError(f"The '{name}' parameter of {func} must be a 1-D array of integer "
                         f"labels. Got shape {arr.shape} instead.")
    integral = arr.dtype.kind in "iub" or (
        arr.dtype.kind == "f" and bool(np.all(np.isfinite(arr) & (np.mod(arr, 1) == 0))))
    if not integral:
        raise ValueError(f"The '{name}' parameter of {func} must be a 1-D array of integer "
                         f"labels. Got dtype {arr.dtype} with non-integer values instead.")
    if len(arr) == 0:
        raise ValueError(f"The '{name}' parameter of {func} must contain at least one label. "
                         f"Got an empty array instead.")
    return arr.astype(np.int64, copy=False)


def _same_length(func: str, **arrays: np.ndarray) -> None:
    (first, a), *rest = arrays.items()
    for name, b in rest:
        if len(b) != len(a):
            raise ShapeError(f"The '{name}' parameter of {func} must have the same length as "
                             f"'{first}' ({len(a)}). Got length {len(b)} instead.")


def _in_range(arr: np.ndarray, name: str, func: str, num_classes: int, why: str = "") -> None:
    if arr.min() < 0 or arr.max() >= num_classes:
        raise ValueError(f"The '{name}' parameter of {func} must hold labels in "
                         f"[0, {num_classes}){why}. Got values from {arr.min()} to {arr.max()} "
                         f"instead.")


def _int_param(value: Any, name: str, func: str, low: int, high: int | None = None) -> int:
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        want = f"an int in [{low}, {high}]" if high is not None else f"an int >= {low}"
        raise ValueError(f"The '{name}' parameter of {func} must be {want}. "
                         f"Got {value!r} instead.")
    return int(value)


def _choice(value: Any, name: str, func: str, options: tuple[Any, ...]) -> None:
    if not any(value is o or (isinstance(value, str) and value == o) for o in options):
        listed = ", ".join(repr(o) for o in options)
        raise ValueError(f"The '{name}' parameter of {func} must be one of {listed}. "
                         f"Got {value!r} instead.")


def _targets_probs(targets: Any, probs: Any, func: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(N,)`` int64 targets and ``(N, K)`` float64 probabilities."""
    t = _labels(targets, "targets", func)
    arr = _to_numpy(probs)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ShapeError(f"The 'probs' parameter of {func} must be a 2-D array of shape "
                         f"(n_samples, n_classes) with n_classes >= 2. Got shape {arr.shape} "
                         f"instead.")
    if arr.shape[0] != len(t):
        raise ShapeError(f"The 'probs' parameter of {func} must have one row per target "
                         f"({len(t)}). Got {arr.shape[0]} rows instead.")
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"The 'probs' parameter of {func} must hold real numbers. "
                         f"Got dtype {arr.dtype} instead.")
    # the tolerance scikit-learn's log_loss uses: float32 softmax output passes, logits do not
    rtol = math.sqrt(np.finfo(arr.dtype if arr.dtype.kind == "f" else np.float64).eps)
    p = arr.astype(np.float64)
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise ValueError(f"The 'probs' parameter of {func} must hold probabilities in [0, 1]. "
                         f"Got values from {np.nanmin(p)} to {np.nanmax(p)} instead "
                         f"(apply softmax to logits first).")
    sums = p.sum(axis=1)
    if not np.allclose(sums, 1.0, rtol=rtol, atol=0.0):
        raise ValueError(f"The 'probs' parameter of {func} must have rows that sum to 1. "
                         f"Got row sums from {sums.min():.6g} to {sums.max():.6g} instead "
                         f"(apply softmax to logits first).")
    _in_range(t, "targets", func, p.shape[1], " (one class per column of 'probs')")
    return t, p


# --- label metrics -------------------------------------------------------------------------------

def accuracy(targets: Any, preds: Any) -> float:
    """Fraction of predictions equal to the targets."""
    t, p = _pair(targets, preds)
    return float((t == p).mean()) if len(t) else float("nan")


def balanced_accuracy(targets: Any, preds: Any, num_classes: int) -> float:
    """Mean recall over the classes present in ``targets`` (scikit-learn's
    ``balanced_accuracy_score``): accuracy that is not inflated by frequent classes.

    Classes with no true samples have no recall and are left out of the mean; if such a class
    is predicted, an :class:`UndefinedMetricWarning` says so.

    Raises:
        ShapeError: label arrays that are not 1-D or of different lengths.
        ValueError: empty or non-integer labels, ``num_classes`` < 1 or a label outside
            ``[0, num_classes)``.
    """
    func = "balanced_accuracy"
    k = _int_param(num_classes, "num_classes", func, 1)
    t, p = _labels(targets, "targets", func), _labels(preds, "preds", func)
    _same_length(func, targets=t, preds=p)
    _in_range(t, "targets", func, k)
    _in_range(p, "preds", func, k)
    support = np.bincount(t, minlength=k)
    hits = np.bincount(t[t == p], minlength=k)
    present = support > 0
    phantom = np.flatnonzero(~present & (np.bincount(p, minlength=k) > 0))
    if len(phantom):
        warnings.warn(f"preds contain class(es) {phantom.tolist()} that never occur in targets; "
                      f"their recall is undefined and left out of the mean",
                      UndefinedMetricWarning, stacklevel=2)
    return float((hits[present] / support[present]).mean())


def top_k_accuracy(targets: Any, probs: Any, k: int) -> float:
    """Fraction of samples whose target is among the ``k`` most probable classes.

    Ties are broken towards the lower class index, as ``argmax`` does, so ``k=1`` equals the
    accuracy of ``probs.argmax(1)``.

    Raises:
        ShapeError: targets not 1-D, probs not 2-D with one row per target.
        ValueError: probs outside [0, 1] or rows not summing to 1, a target outside
            ``[0, K)`` or ``k`` outside ``[1, K]``.
    """
    func = "top_k_accuracy"
    t, p = _targets_probs(targets, probs, func)
    k = _int_param(k, "k", func, 1, p.shape[1])
    rows = np.arange(len(t))
    target_p = p[rows, t][:, None]  # (N, 1)
    lower_index = np.arange(p.shape[1])[None, :] < t[:, None]  # (N, K)
    rank = ((p > target_p) | ((p == target_p) & lower_index)).sum(axis=1)  # classes ranked above
    return float((rank < k).mean())


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


def normalized_confusion_matrix(
    cm: Any, over: Literal["true", "pred", "all"] = "true"
) -> np.ndarray:
    """A confusion matrix as fractions: of each true class (rows sum to 1, the diagonal is the
    recall), of each predicted class (columns sum to 1, the diagonal is the precision) or of all
    samples. Rows or columns with no samples stay zeros rather than NaN, as in scikit-learn's
    ``confusion_matrix(normalize=...)``.

    Raises:
        ShapeError: ``cm`` is not a square 2-D array.
        ValueError: negative or non-finite counts, or ``over`` not one of 'true', 'pred', 'all'.
    """
    func = "normalized_confusion_matrix"
    _choice(over, "over", func, ("true", "pred", "all"))
    arr = _to_numpy(cm)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ShapeError(f"The 'cm' parameter of {func} must be a square 2-D array. "
                         f"Got shape {arr.shape} instead.")
    counts = arr.astype(np.float64)
    if not np.all(np.isfinite(counts)) or (counts.size and counts.min() < 0):
        raise ValueError(f"The 'cm' parameter of {func} must hold non-negative counts. "
                         f"Got values from {np.nanmin(counts)} to {np.nanmax(counts)} instead.")
    axis = {"true": 1, "pred": 0, "all": None}[over]
    totals = counts.sum(axis=axis, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


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
    targets: Any, preds: Any, classes: list[str], *, specificity: bool = True
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro and weighted averages and the
    confusion matrix, as plain Python values ready for JSON.

    With ``specificity=True`` every per-class entry and both averages also carry
    ``"specificity"``, TN / (TN + FP): the recall of "not this class". It is off by default so
    that the entries keep exactly their historical keys. The weighted average weights by
    support, like the other figures.

    Raises:
        ShapeError: label arrays of different lengths.
        ValueError: a label outside ``[0, len(classes))``.
    """
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
    report = {
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
    if specificity:
        negatives = total - support  # TN + FP
        false_pos = predicted - tp
        spec = _safe_div(negatives - false_pos, negatives,
                         "specificity (no negative samples)", classes)
        for i, name in enumerate(classes):
            per_class[name]["specificity"] = float(spec[i])
        report["macro"]["specificity"] = float(spec.mean())
        report["weighted"]["specificity"] = float((spec * weights).sum())
    return report


# --- probability metrics -------------------------------------------------------------------------

def _binary_curve(
    positive: np.ndarray, scores: np.ndarray, drop_intermediate: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False and true positive counts and thresholds, one point per distinct score, plus the
    (0, 0) start at threshold +inf; scikit-learn's ``roc_curve`` algorithm."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    s, y = scores[order], positive[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[last_of_run].astype(np.float64)
    fps = 1 + last_of_run - tps
    thresholds = s[last_of_run]
    if drop_intermediate and len(fps) > 2:  # drop points on a straight line between neighbours
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    return np.r_[0.0, fps], np.r_[0.0, tps], np.r_[np.inf, thresholds]


def _undefined_classes_warning(no_pos: list[int], no_neg: list[int], what: str) -> None:
    parts = [f"class(es) {cls} have no {kind} samples"
             for cls, kind in ((no_pos, "positive"), (no_neg, "negative")) if cls]
    warnings.warn(f"{what}: {'; '.join(parts)}", UndefinedMetricWarning, stacklevel=3)


def roc_curves(
    targets: Any, probs: Any, *, drop_intermediate: bool = True
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One-vs-rest ROC curve of every class: ``curves[c] = (fpr, tpr, thresholds)`` for
    "class c" against the rest, scored by ``probs[:, c]``, exactly as scikit-learn's
    ``roc_curve`` draws it (the first threshold is +inf; ``drop_intermediate`` leaves out
    points that lie on a straight line between their neighbours).

    A class with no positive (or no negative) samples has an undefined TPR (FPR); it is NaN
    there, as in scikit-learn, with an :class:`UndefinedMetricWarning`.

    Raises:
        ShapeError: targets not 1-D, probs not 2-D with one row per target.
        ValueError: probs outside [0, 1] or rows not summing to 1, or a target outside
            ``[0, K)``.
    """
    t, p = _targets_probs(targets, probs, "roc_curves")
    curves, no_pos, no_neg = [], [], []
    for c in range(p.shape[1]):
        fps, tps, thresholds = _binary_curve(t == c, p[:, c], drop_intermediate)
        if tps[-1] == 0:
            no_pos.append(c)
        if fps[-1] == 0:
            no_neg.append(c)
        with np.errstate(invalid="ignore"):  # 0/0 for an undefined axis gives the NaN we want
            curves.append((fps / fps[-1], tps / tps[-1], thresholds))
    if no_pos or no_neg:
        _undefined_classes_warning(no_pos, no_neg, "ROC curve is undefined where")
    return curves


def _area(fps: np.ndarray, tps: np.ndarray) -> float:
    return float(np.trapezoid(tps / tps[-1], fps / fps[-1]))


def roc_auc(
    targets: Any, probs: Any, average: Literal["macro", "micro"] | None = "macro"
) -> float | np.ndarray:
    """Area under the one-vs-rest ROC curves.

    ``average="macro"`` is the mean of the per-class areas (scikit-learn's
    ``roc_auc_score(multi_class="ovr")``), ``"micro"`` the area of one curve over all
    (sample, class) pairs of the one-hot targets, ``None`` the ``(K,)`` per-class areas.
    A class with no positive or no negative samples has no area: it gets an
    :class:`UndefinedMetricWarning`, is left out of the macro average and is NaN with
    ``average=None``.

    Raises:
        ShapeError: targets not 1-D, probs not 2-D with one row per target.
        ValueError: probs outside [0, 1] or rows not summing to 1, a target outside
            ``[0, K)`` or ``average`` not one of 'macro', 'micro', None.
    """
    func = "roc_auc"
    _choice(average, "average", func, ("macro", "micro", None))
    t, p = _targets_probs(targets, probs, func)
    if average == "micro":
        onehot = np.arange(p.shape[1])[None, :] == t[:, None]  # (N, K); has both kinds as K >= 2
        fps, tps, _ = _binary_curve(onehot.ravel(), p.ravel(), drop_intermediate=True)
        return _area(fps, tps)
    areas = np.full(p.shape[1], np.nan)
    no_pos, no_neg = [], []
    for c in range(p.shape[1]):
        fps, tps, _ = _binary_curve(t == c, p[:, c], drop_intermediate=True)
        if tps[-1] == 0 or fps[-1] == 0:
            (no_pos if tps[-1] == 0 else no_neg).append(c)
            continue
        areas[c] = _area(fps, tps)
    if no_pos or no_neg:
        what = "ROC AUC is undefined and left out of the macro average where"
        _undefined_classes_warning(no_pos, no_neg, what if average == "macro" else
                                   "ROC AUC is undefined (NaN) where")
    if average is None:
        return areas
    defined = areas[~np.isnan(areas)]
    return float(defined.mean()) if len(defined) else float("nan")


def log_loss(targets: Any, probs: Any, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood of the targets, ``-mean(log p[i, targets[i]])``, with the
    probabilities clipped to ``[eps, 1 - eps]`` so a confident mistake costs
    ``-log(eps)`` (about 34.5 by default) rather than infinity.

    Raises:
        ShapeError: targets not 1-D, probs not 2-D with one row per target.
        ValueError: probs outside [0, 1] or rows not summing to 1, a target outside
            ``[0, K)`` or ``eps`` outside (0, 0.5).
    """
    func = "log_loss"
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < 0.5:
        raise ValueError(f"The 'eps' parameter of {func} must be a float in (0, 0.5). "
                         f"Got {eps!r} instead.")
    t, p = _targets_probs(targets, probs, func)
    target_p = np.clip(p[np.arange(len(t)), t], eps, 1 - eps)
    return float(-np.log(target_p).mean())


def expected_calibration_error(
    targets: Any, probs: Any, n_bins: int = 15
) -> tuple[float, dict[str, np.ndarray]]:
    """Expected calibration error (Guo et al., 2017) and the data of a reliability diagram.

    Samples are binned by confidence (the top probability) into ``n_bins`` equal-width bins
    ``(lo, hi]`` over [0, 1]; ECE is the sample-weighted mean over bins of
    ``|accuracy - mean confidence|``, where a prediction is ``argmax`` of the row.

    Returns:
        ``(ece, bins)`` where ``bins`` holds ``"edges"`` ``(n_bins + 1,)`` and, per bin,
        ``"confidence"`` (mean confidence), ``"accuracy"`` and ``"count"``, each
        ``(n_bins,)``; an empty bin has count 0 and zeros rather than NaN.

    Raises:
        ShapeError: targets not 1-D, probs not 2-D with one row per target.
        ValueError: probs outside [0, 1] or rows not summing to 1, a target outside
            ``[0, K)`` or ``n_bins`` < 1.
    """
    func = "expected_calibration_error"
    n_bins = _int_param(n_bins, "n_bins", func, 1)
    t, p = _targets_probs(targets, probs, func)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == t).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # edges[b] < confidence <= edges[b + 1]; a confidence of exactly 0 cannot occur (K >= 1)
    bin_of = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(bin_of, minlength=n_bins)
    conf_sum = np.bincount(bin_of, weights=confidence, minlength=n_bins)
    hit_sum = np.bincount(bin_of, weights=correct, minlength=n_bins)
    nonempty = count > 0
    mean_conf = np.divide(conf_sum, count, out=np.zeros(n_bins), where=nonempty)
    bin_acc = np.divide(hit_sum, count, out=np.zeros(n_bins), where=nonempty)
    ece = float(np.abs(hit_sum - conf_sum).sum() / len(t))  # = sum_b n_b/N |acc_b - conf_b|
    return ece, {"edges": edges, "confidence": mean_conf, "accuracy": bin_acc, "count": count}


# --- uncertainty and comparison ------------------------------------------------------------------

def bootstrap_ci(
    targets: Any,
    preds: Any,
    metric: Literal["accuracy", "macro_f1"] = "accuracy",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int | None = 0,
) -> tuple[float, float, float]:
    """Point estimate and percentile bootstrap confidence interval ``(point, low, high)`` of
    accuracy or macro F1.

    Both metrics depend only on the confusion matrix, so resampling the samples with
    replacement is the same as drawing the cell counts from a multinomial over the observed
    (target, pred) pairs; that is what is done, ``n_boot`` draws at once, so the cost grows
    with the number of distinct pairs, not of samples (1000 resamples of 10,000 labels take a
    few milliseconds with 10 classes). Macro F1 averages over the classes seen in ``targets``
    or ``preds``; a class that vanishes from a resample scores 0 there.

    Raises:
        ShapeError: label arrays that are not 1-D or of different lengths.
        ValueError: empty or non-integer labels, an unknown ``metric``, ``n_boot`` < 1 or
            ``confidence`` outside (0, 1).
    """
    func = "bootstrap_ci"
    _choice(metric, "metric", func, ("accuracy", "macro_f1"))
    n_boot = _int_param(n_boot, "n_boot", func, 1)
    if (isinstance(confidence, bool) or not isinstance(confidence, int | float)
            or not 0 < confidence < 1):
        raise ValueError(f"The 'confidence' parameter of {func} must be a float in (0, 1). "
                         f"Got {confidence!r} instead.")
    t, p = _labels(targets, "targets", func), _labels(preds, "preds", func)
    _same_length(func, targets=t, preds=p)
    n = len(t)
    classes, idx = np.unique(np.concatenate([t, p]), return_inverse=True)
    k = len(classes)
    cells, cell_counts = np.unique(idx[:n] * k + idx[n:], return_counts=True)  # non-empty cells
    true_of, pred_of = cells // k, cells % k
    diagonal = true_of == pred_of

    def score(counts: np.ndarray) -> np.ndarray:  # (B, cells) -> (B,)
        if metric == "accuracy":
            return counts[:, diagonal].sum(axis=1) / n
        counts_t = torch.from_numpy(counts)
        tp = torch.zeros(len(counts), k, dtype=torch.float64)
        tp.index_add_(1, torch.from_numpy(true_of[diagonal]), counts_t[:, diagonal])
        # support + predicted of each class: every cell counts once for its row and its column
        den = torch.zeros(len(counts), k, dtype=torch.float64)
        den.index_add_(1, torch.from_numpy(true_of), counts_t)
        den.index_add_(1, torch.from_numpy(pred_of), counts_t)
        f1 = torch.where(den > 0, 2 * tp / den.clamp(min=1), 0.0)  # F1 = 2TP / (2TP + FP + FN)
        return f1.mean(dim=1).numpy()

    point = float(score(cell_counts[None, :].astype(np.float64))[0])
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, cell_counts / n, size=n_boot).astype(np.float64)  # (B, cells)
    low, high = np.quantile(score(draws), [(1 - confidence) / 2, (1 + confidence) / 2])
    return point, float(low), float(high)


def _binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    try:
        from scipy.stats import binom
    except ImportError:
        return math.fsum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return float(binom.cdf(k, n, 0.5))


def _chi2_sf_1df(x: float) -> float:
    """P(X >= x) for X ~ chi-square with one degree of freedom."""
    try:
        from scipy.stats import chi2
    except ImportError:
        return math.erfc(math.sqrt(x / 2))  # X = Z^2, so P(X >= x) = P(|Z| >= sqrt(x))
    return float(chi2.sf(x, 1))


def mcnemar(targets: Any, preds_a: Any, preds_b: Any) -> tuple[float, float]:
    """McNemar's test of whether two classifiers, scored on the same samples, have the same
    error rate. Only the discordant samples count: ``b`` right by A and wrong by B, ``c`` the
    reverse.

    With fewer than 25 discordant samples the test is the exact two-sided binomial one:
    statistic ``min(b, c)``, p-value ``min(1, 2 P(X <= min(b, c)))`` for
    ``X ~ Binomial(b + c, 1/2)``. Otherwise it is the chi-square test with continuity
    correction: statistic ``max(|b - c| - 1, 0)**2 / (b + c)`` on one degree of freedom.
    scipy is used when importable; the fallback is exact arithmetic.

    Returns:
        ``(statistic, p_value)``.

    Raises:
        ShapeError: label arrays that are not 1-D or of different lengths.
        ValueError: empty or non-integer labels.
    """
    func = "mcnemar"
    t = _labels(targets, "targets", func)
    a, b_ = _labels(preds_a, "preds_a", func), _labels(preds_b, "preds_b", func)
    _same_length(func, targets=t, preds_a=a, preds_b=b_)
    right_a, right_b = a == t, b_ == t
    b = int((right_a & ~right_b).sum())
    c = int((~right_a & right_b).sum())
    if b + c < 25:
        smaller = min(b, c)
        return float(smaller), min(1.0, 2 * _binom_cdf_half(smaller, b + c))
    statistic = max(abs(b - c) - 1, 0) ** 2 / (b + c)
    return float(statistic), _chi2_sf_1df(statistic)
