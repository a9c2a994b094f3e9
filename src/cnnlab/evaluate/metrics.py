"""Classification metrics on label and probability tensors/arrays: accuracy, balanced and top-k
accuracy, confusion matrices, per-class precision, recall, F1 and specificity with macro and
weighted averages, one-vs-rest ROC curves and AUC, log loss, calibration error, bootstrap
confidence intervals and McNemar's test for comparing two classifiers.

scikit-learn computes the figures, SciPy the p-values. What is ours: the validation (one message
form naming our function and argument; tensors accepted) and what the libraries lack or do
differently, each saying why and cross-checked in the tests. Labels are 1-D integer arrays or
tensors; probabilities are ``(N, K)`` with rows summing to 1 (apply softmax to logits first).
Degenerate cases follow scikit-learn's ``zero_division``: a class never predicted (or never
present) gets 0 for the undefined figure and an :class:`UndefinedMetricWarning` naming it.

Longer than 450 lines: every metric with its argument validation (one message form) and its
scikit-learn call; splitting them would scatter the validation they share.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import numpy as np
import sklearn.exceptions
import torch
from scipy import stats
from sklearn import metrics as skm

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


class UndefinedMetricWarning(sklearn.exceptions.UndefinedMetricWarning):
    """A metric is undefined for some class (e.g. precision of a class never predicted).

    A subclass of scikit-learn's warning of that name, so a filter on either catches it; where
    it is raised, scikit-learn's own (which does not name the classes) is suppressed."""


def _to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _pair(targets: Any, preds: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = _to_numpy(targets), _to_numpy(preds)
    for name, arr in (("targets", t), ("preds", p)):
        if arr.ndim != 1:
            raise ShapeError(f"The '{name}' parameter must be a 1-D array of labels. "
                             f"Got shape {arr.shape} instead.")
    if len(t) != len(p):
        raise ShapeError(f"targets and preds must have the same length; got {len(t)} and {len(p)}")
    return t.astype(np.int64, copy=False), p.astype(np.int64, copy=False)


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
    """Fraction of predictions equal to the targets (NaN for no samples)."""
    t, p = _pair(targets, preds)
    return float(skm.accuracy_score(t, p)) if len(t) else float("nan")


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
    phantom = np.setdiff1d(p, t)
    if len(phantom):
        warnings.warn(f"preds contain class(es) {phantom.tolist()} that never occur in targets; "
                      f"their recall is undefined and left out of the mean",
                      UndefinedMetricWarning, stacklevel=2)
    with warnings.catch_warnings():  # scikit-learn's own says the same without the classes
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true", UserWarning)
        return float(skm.balanced_accuracy_score(t, p))


def top_k_accuracy(targets: Any, probs: Any, k: int) -> float:
    """Fraction of samples whose target is among the ``k`` most probable classes.

    Ties are broken towards the lower class index, as ``argmax`` does, so ``k=1`` equals the
    accuracy of ``probs.argmax(1)``.

    Raises:
        ShapeError: targets not 1-D, probs not 2-D with one row per target.
        ValueError: probs outside [0, 1] or rows not summing to 1, a target outside
            ``[0, K)`` or ``k`` outside ``[1, K]``.
    """
    # Not scikit-learn's top_k_accuracy_score: it breaks ties towards the higher class index
    # (its k=1 then disagrees with argmax and accuracy), wants 1-D scores for two classes and
    # warns at k = K. The tests check this one against it on untied scores.
    func = "top_k_accuracy"
    t, p = _targets_probs(targets, probs, func)
    k = _int_param(k, "k", func, 1, p.shape[1])
    target_p = p[np.arange(len(t)), t][:, None]  # (N, 1)
    lower_index = np.arange(p.shape[1])[None, :] < t[:, None]  # (N, K)
    rank = ((p > target_p) | ((p == target_p) & lower_index)).sum(axis=1)  # classes ranked above
    return float((rank < k).mean())


def _labelled_pair(targets: Any, preds: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    t, p = _pair(targets, preds)
    for name, arr in (("targets", t), ("preds", p)):
        if len(arr) and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"The '{name}' labels must lie in [0, {num_classes}). "
                             f"Got values from {arr.min()} to {arr.max()} instead.")
    return t, p


def confusion_matrix(targets: Any, preds: Any, num_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of samples of true class ``i`` predicted as ``j`` (scikit-learn's
    ``confusion_matrix`` over the labels ``0 .. num_classes - 1``).

    Raises:
        ShapeError: label arrays of different lengths.
        ValueError: a label outside ``[0, num_classes)``.
    """
    t, p = _labelled_pair(targets, preds, num_classes)
    if not len(t):  # scikit-learn refuses empty input; no samples is an all-zero matrix
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    return skm.confusion_matrix(t, p, labels=np.arange(num_classes))


def normalized_confusion_matrix(
    cm: Any, over: Literal["true", "pred", "all"] = "true"
) -> np.ndarray:
    """A confusion matrix as fractions: of each true class (rows sum to 1, the diagonal is the
    recall), of each predicted class (columns sum to 1, the diagonal is the precision) or of all
    samples. Rows or columns with no samples stay zeros rather than NaN, as in scikit-learn's
    ``confusion_matrix(normalize=...)``, which normalises only while it counts labels: this
    takes a matrix already counted (summed over folds, say).

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


def _warn_undefined(undefined: np.ndarray, what: str, classes: list[str]) -> None:
    if undefined.any():
        bad = [classes[i] for i in np.flatnonzero(undefined)]
        warnings.warn(f"{what} is undefined for class(es) {bad} and set to 0.0",
                      UndefinedMetricWarning, stacklevel=3)


def classification_report(
    targets: Any, preds: Any, classes: list[str], *, specificity: bool = True
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro and weighted averages and the
    confusion matrix, as plain Python values ready for JSON. Precision, recall and F1 are
    scikit-learn's ``precision_recall_fscore_support`` with ``zero_division=0``; the warning
    for an undefined figure is ours and names the classes.

    With ``specificity=True`` every per-class entry and both averages also carry
    ``"specificity"``, TN / (TN + FP): the recall of "not this class", which scikit-learn has
    no function for. ``specificity=False`` leaves the entries with exactly the keys they had
    before specificity was added. The weighted average weights by support, like the other
    figures.

    Raises:
        ShapeError: label arrays of different lengths.
        ValueError: a label outside ``[0, len(classes))``.
    """
    k = len(classes)
    t, p = _labelled_pair(targets, preds, k)
    cm = confusion_matrix(t, p, k)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    _warn_undefined(predicted == 0, "precision (no predicted samples)", classes)
    _warn_undefined(support == 0, "recall (no true samples)", classes)
    if len(t):
        precision, recall, f1, _ = skm.precision_recall_fscore_support(
            t, p, labels=np.arange(k), zero_division=0)
    else:
        precision = recall = f1 = np.zeros(k)
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
        true_neg = negatives - (predicted - tp)
        _warn_undefined(negatives == 0, "specificity (no negative samples)", classes)
        spec = np.divide(true_neg, negatives, out=np.zeros(k), where=negatives > 0)
        for i, name in enumerate(classes):
            per_class[name]["specificity"] = float(spec[i])
        report["macro"]["specificity"] = float(spec.mean())
        report["weighted"]["specificity"] = float((spec * weights).sum())
    return report


# --- probability metrics -------------------------------------------------------------------------

def _one_vs_rest(t: np.ndarray, k: int) -> tuple[np.ndarray, list[int], list[int]]:
    """``(N, K)`` one-hot targets, and the classes with no positive and with no negative
    samples (their ROC curve and AUC are undefined)."""
    onehot = np.arange(k)[None, :] == t[:, None]  # (N, K)
    return (onehot, np.flatnonzero(~onehot.any(axis=0)).tolist(),
            np.flatnonzero(onehot.all(axis=0)).tolist())


def _undefined_classes_warning(no_pos: list[int], no_neg: list[int], what: str) -> None:
    parts = [f"class(es) {cls} have no {kind} samples"
             for cls, kind in ((no_pos, "positive"), (no_neg, "negative")) if cls]
    warnings.warn(f"{what}: {'; '.join(parts)}", UndefinedMetricWarning, stacklevel=3)


def roc_curves(
    targets: Any, probs: Any, *, drop_intermediate: bool = True
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One-vs-rest ROC curve of every class: ``curves[c] = (fpr, tpr, thresholds)`` for
    "class c" against the rest, scored by ``probs[:, c]``, from scikit-learn's ``roc_curve``
    (the first threshold is +inf; ``drop_intermediate`` leaves out points that lie on a
    straight line between their neighbours).

    A class with no positive (or no negative) samples has an undefined TPR (FPR); it is NaN
    there, as in scikit-learn, with one :class:`UndefinedMetricWarning` naming the classes.

    Raises:
        ShapeError: targets not 1-D, probs not 2-D with one row per target.
        ValueError: probs outside [0, 1] or rows not summing to 1, or a target outside
            ``[0, K)``.
    """
    t, p = _targets_probs(targets, probs, "roc_curves")
    onehot, no_pos, no_neg = _one_vs_rest(t, p.shape[1])
    if no_pos or no_neg:
        _undefined_classes_warning(no_pos, no_neg, "ROC curve is undefined where")
    with warnings.catch_warnings():  # scikit-learn's, one per class, say what ours said once
        warnings.simplefilter("ignore", sklearn.exceptions.UndefinedMetricWarning)
        return [skm.roc_curve(onehot[:, c], p[:, c], drop_intermediate=drop_intermediate)
                for c in range(p.shape[1])]


def roc_auc(
    targets: Any, probs: Any, average: Literal["macro", "micro"] | None = "macro"
) -> float | np.ndarray:
    """Area under the one-vs-rest ROC curves, from scikit-learn's ``roc_auc_score``.

    ``average="macro"`` is the mean of the per-class areas (``roc_auc_score(multi_class=
    "ovr")``), ``"micro"`` the area of one curve over all (sample, class) pairs of the one-hot
    targets, ``None`` the ``(K,)`` per-class areas. A class with no positive or no negative
    samples has no area (scikit-learn raises): it gets an :class:`UndefinedMetricWarning`, is
    left out of the macro average and is NaN with ``average=None``.

    Raises:
        ShapeError: targets not 1-D, probs not 2-D with one row per target.
        ValueError: probs outside [0, 1] or rows not summing to 1, a target outside
            ``[0, K)`` or ``average`` not one of 'macro', 'micro', None.
    """
    func = "roc_auc"
    _choice(average, "average", func, ("macro", "micro", None))
    t, p = _targets_probs(targets, probs, func)
    onehot, no_pos, no_neg = _one_vs_rest(t, p.shape[1])
    if average == "micro":  # the pooled pairs have both kinds, as K >= 2
        return float(skm.roc_auc_score(onehot, p, average="micro"))
    if no_pos or no_neg:
        _undefined_classes_warning(
            no_pos, no_neg, "ROC AUC is undefined and left out of the macro average where"
            if average == "macro" else "ROC AUC is undefined (NaN) where")
    undefined = set(no_pos) | set(no_neg)
    areas = np.array([np.nan if c in undefined else skm.roc_auc_score(onehot[:, c], p[:, c])
                      for c in range(p.shape[1])])
    if average is None:
        return areas
    defined = areas[~np.isnan(areas)]
    return float(defined.mean()) if len(defined) else float("nan")


def log_loss(targets: Any, probs: Any, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood of the targets, ``-mean(log p[i, targets[i]])``, from
    scikit-learn's ``log_loss``, with the probabilities clipped to ``[eps, 1 - eps]`` (rows
    renormalised after) so a confident mistake costs ``-log(eps)`` (about 34.5 by default)
    rather than infinity.

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
    # scikit-learn >= 1.5 dropped `eps` (it clips at the float's machine epsilon) and warns when
    # rows are off 1 by more than sqrt(eps) of float64, as float32 softmax rows are: clip and
    # renormalise here, as scikit-learn itself did before.
    clipped = np.clip(p, eps, 1 - eps)
    return float(skm.log_loss(t, clipped / clipped.sum(axis=1, keepdims=True),
                              labels=np.arange(p.shape[1])))


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
    # Ours: scikit-learn has no ECE, and its calibration_curve (the tests check these bins
    # against it) scores one binary column and drops the empty bins a diagram needs.
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
    with the number of distinct pairs, not of samples. Macro F1 averages over the classes seen
    in ``targets`` or ``preds``; a class that vanishes from a resample scores 0 there.

    Raises:
        ShapeError: label arrays that are not 1-D or of different lengths.
        ValueError: empty or non-integer labels, an unknown ``metric``, ``n_boot`` < 1 or
            ``confidence`` outside (0, 1).
    """
    # Not scipy.stats.bootstrap: it resamples the N labels themselves, several times slower
    # here for 1000 resamples of 10,000 labels (benchmarks/bench_bootstrap.py times both).
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
        rows, cols = np.eye(k)[true_of], np.eye(k)[pred_of]  # (cells, K): each cell's classes
        tp = counts[:, diagonal] @ rows[diagonal]  # (B, K)
        den = counts @ (rows + cols)  # support + predicted = 2TP + FP + FN
        return np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0).mean(axis=1)

    point = float(score(cell_counts[None, :].astype(np.float64))[0])
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, cell_counts / n, size=n_boot).astype(np.float64)  # (B, cells)
    low, high = np.quantile(score(draws), [(1 - confidence) / 2, (1 + confidence) / 2])
    return point, float(low), float(high)


def mcnemar(targets: Any, preds_a: Any, preds_b: Any) -> tuple[float, float]:
    """McNemar's test of whether two classifiers, scored on the same samples, have the same
    error rate. Only the discordant samples count: ``b`` right by A and wrong by B, ``c`` the
    reverse.

    With fewer than 25 discordant samples the test is the exact two-sided binomial one
    (SciPy's ``binomtest``): statistic ``min(b, c)``, p-value ``min(1, 2 P(X <= min(b, c)))``
    for ``X ~ Binomial(b + c, 1/2)``. Otherwise it is the chi-square test with continuity
    correction: statistic ``max(|b - c| - 1, 0)**2 / (b + c)`` on one degree of freedom.

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
    if b + c == 0:  # the classifiers never disagree: no evidence of a difference
        return 0.0, 1.0
    if b + c < 25:
        smaller = min(b, c)
        return float(smaller), float(stats.binomtest(smaller, b + c, 0.5).pvalue)
    statistic = max(abs(b - c) - 1, 0) ** 2 / (b + c)
    return float(statistic), float(stats.chi2.sf(statistic, 1))
