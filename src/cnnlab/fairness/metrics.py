"""Metrics by group, with intervals that resample writers.

Point figures come from Fairlearn's :class:`~fairlearn.metrics.MetricFrame` (accuracy, error
rate, log-loss, per-class recall and precision, by group). Their 95 % intervals come from a
cluster bootstrap: the digits of one writer are not independent (a writer who closes their 4s
gets many 4s wrong), so each draw resamples *writers* with replacement and keeps all their
digits; with one digit per cluster it is the ordinary bootstrap. Every figure here is a ratio of
sums over digits (errors / digits, correct 3s / true 3s, ...), so a draw is one matrix product of
per-writer counts; no model runs again.

Groups smaller than :data:`MIN_GROUP` images are reported with a warning, and left out of the
worst group, the differences, the ratios and the recall gaps.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnlab.errors import ConfigError, DataError

__all__ = ["MIN_GROUP", "GroupCounts", "cluster_bootstrap_draws", "group_metrics",
           "metric_frame", "writer_breakdown"]

MIN_GROUP = 30  # fewer images than this: reported, with a warning, but never compared
_EPS = 1e-15  # log-loss clips probabilities here (scikit-learn's choice)


def _check(targets: np.ndarray, preds: np.ndarray, p_true: np.ndarray, groups: np.ndarray,
           clusters: np.ndarray) -> None:
    n = len(targets)
    for name, a in (("preds", preds), ("p_true", p_true), ("groups", groups),
                    ("clusters", clusters)):
        if len(a) != n:
            raise DataError(f"group metrics need one {name} entry per image: {n} targets but "
                            f"{len(a)} {name}")
    if n == 0:
        raise DataError("group metrics need at least one image")


def _check_boot(n_boot: int, confidence: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or not 10 <= n_boot <= 100_000:
        raise ConfigError(f"The 'n_boot' parameter must be an int from 10 to 100000. "
                          f"Got {n_boot!r} instead.")
    if not (isinstance(confidence, float) and math.isfinite(confidence)
            and 0.5 <= confidence < 1):
        raise ConfigError(f"The 'confidence' parameter must be a float in [0.5, 1). "
                          f"Got {confidence!r} instead.")


def metric_frame(targets: np.ndarray, preds: np.ndarray, p_true: np.ndarray,
                 groups: np.ndarray, num_classes: int) -> Any:
    """Fairlearn's MetricFrame of accuracy, error rate, log-loss and per-class recall and
    precision (``recall_<k>``, ``precision_<k>``) by group.

    ``p_true`` is the probability the model gave each image's true class (log-loss is the mean
    of ``-log p_true``).
    """
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import precision_score, recall_score

    def accuracy(y: np.ndarray, p: np.ndarray) -> float:
        return float(np.mean(y == p))

    def error_rate(y: np.ndarray, p: np.ndarray) -> float:
        return float(np.mean(y != p))

    def log_loss(y: np.ndarray, p: np.ndarray, p_true: np.ndarray) -> float:
        return float(-np.log(np.clip(p_true, _EPS, 1.0)).mean())

    metrics: dict[str, Any] = {"accuracy": accuracy, "error_rate": error_rate,
                               "log_loss": log_loss}
    for k in range(num_classes):
        # one class each: a scalar per cell, so MetricFrame's frame stays numeric
        metrics[f"recall_{k}"] = _per_class(recall_score, k)
        metrics[f"precision_{k}"] = _per_class(precision_score, k)
    return MetricFrame(metrics=metrics, y_true=np.asarray(targets), y_pred=np.asarray(preds),
                       sensitive_features=np.asarray(groups, dtype=str),
                       sample_params={"log_loss": {"p_true": np.asarray(p_true, float)}})


def _per_class(score: Any, k: int) -> Any:
    def metric(y: np.ndarray, p: np.ndarray) -> float:
        # a group without class k (or without predictions of it) has no figure: NaN, not 0
        if not np.any((y if score.__name__ == "recall_score" else p) == k):
            return math.nan
        return float(score(y, p, labels=[k], average="macro", zero_division=0))
    return metric


@dataclass(frozen=True)
class GroupCounts:
    """Per (cluster, group) sums of every count a group figure is a ratio of.

    ``counts[c, g, q]``: q = 0 images, 1 errors, 2 log-loss sum, then per class k
    ``3 + k`` true k, ``3 + K + k`` correct true k, ``3 + 2K + k`` predicted k.
    """

    counts: np.ndarray  # float64 (C, G, 3 + 3K)
    groups: list[str]
    num_classes: int

    @classmethod
    def build(cls, targets: np.ndarray, preds: np.ndarray, p_true: np.ndarray,
              groups: np.ndarray, clusters: np.ndarray, order: list[str],
              num_classes: int) -> GroupCounts:
        g_index = {g: i for i, g in enumerate(order)}
        g = np.array([g_index[v] for v in np.asarray(groups, dtype=str)], dtype=np.int64)
        _, c = np.unique(np.asarray(clusters), return_inverse=True)
        c = c.reshape(-1)
        n_c, n_g, k = int(c.max()) + 1, len(order), num_classes
        t, p = np.asarray(targets, np.int64), np.asarray(preds, np.int64)
        correct = (t == p).astype(np.float64)
        loss = -np.log(np.clip(np.asarray(p_true, np.float64), _EPS, 1.0))
        q = 3 + 3 * k
        cell = c * n_g + g
        out = np.zeros((n_c * n_g, q))
        out[:, 0] = np.bincount(cell, minlength=n_c * n_g)
        out[:, 1] = np.bincount(cell, weights=1 - correct, minlength=n_c * n_g)
        out[:, 2] = np.bincount(cell, weights=loss, minlength=n_c * n_g)
        flat = out.reshape(-1)
        for offset, cls_index, weight in ((3, t, None), (3 + k, t, correct), (3 + 2 * k, p, None)):
            idx = cell * q + offset + cls_index
            flat += np.bincount(idx, weights=weight, minlength=flat.size)
        return cls(out.reshape(n_c, n_g, q), list(order), k)

    def figures(self, totals: np.ndarray) -> dict[str, np.ndarray]:
        """Accuracy, error rate, log-loss (..., G) and recall, precision (..., G, K) from
        totals (..., G, Q) (NaN where a denominator is 0)."""
        k = self.num_classes
        with np.errstate(invalid="ignore", divide="ignore"):
            n = totals[..., 0]
            err = totals[..., 1] / n
            return {"accuracy": 1 - err, "error_rate": err, "log_loss": totals[..., 2] / n,
                    "recall": totals[..., 3 + k:3 + 2 * k] / totals[..., 3:3 + k],
                    "precision": totals[..., 3 + k:3 + 2 * k] / totals[..., 3 + 2 * k:]}


def cluster_bootstrap_draws(counts: GroupCounts, n_boot: int, seed: int | None
                            ) -> dict[str, np.ndarray]:
    """The figures of ``n_boot`` draws that resample clusters (writers) with replacement:
    arrays (n_boot, G) and (n_boot, G, K)."""
    rng = np.random.default_rng(seed)
    n_c = counts.counts.shape[0]
    weights = rng.multinomial(n_c, np.full(n_c, 1.0 / n_c), size=n_boot).astype(np.float64)
    totals = np.einsum("bc,cgq->bgq", weights, counts.counts)
    return counts.figures(totals)


def _ci(draws: np.ndarray, confidence: float) -> list[float]:
    d = draws[np.isfinite(draws)]
    if d.size == 0:
        return [math.nan, math.nan]
    q = np.quantile(d, [(1 - confidence) / 2, (1 + confidence) / 2])
    return [float(q[0]), float(q[1])]


def _spread(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(max - min, min / max) over the last axis, NaN-aware."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: a class no group has
        high, low = np.nanmax(values, axis=-1), np.nanmin(values, axis=-1)
        return high - low, np.where(high > 0, low / high, math.nan)


def group_metrics(targets: np.ndarray, preds: np.ndarray, p_true: np.ndarray,
                  groups: np.ndarray, clusters: np.ndarray | None = None, *,
                  classes: list[str], order: list[str] | None = None, n_boot: int = 1000,
                  confidence: float = 0.95, seed: int | None = 0,
                  min_group: int = MIN_GROUP) -> dict[str, Any]:
    """Accuracy, error rate, log-loss and per-class recall and precision by group, the worst
    group, the differences (max - min) and ratios (min / max) between groups and the per-class
    recall gaps (multiclass equal opportunity), each with a cluster-bootstrap interval.

    Args:
        targets, preds: true and predicted class indices (N,).
        p_true: the probability the model gave the true class (N,).
        groups: a group name per image (N,).
        clusters: who wrote each image (writer ids), the unit the bootstrap resamples;
            ``None``: each image on its own (the ordinary bootstrap).
        classes: the class names (their count fixes K).
        order: the groups in report order (default: sorted).
        n_boot, confidence, seed: the bootstrap.
        min_group: groups with fewer images are reported but never compared.

    Returns:
        A JSON-ready dict: ``groups`` (one record each), ``overall``, ``worst_group``,
        ``differences``, ``ratios``, ``equal_opportunity``, ``gap`` (two groups: the first's
        error rate minus the second's), ``bootstrap`` and ``warnings``.

    Raises:
        ConfigError: ``n_boot`` or ``confidence`` out of range.
        DataError: arrays of different lengths, no images, or a group not in ``order``.
    """
    t, p = np.asarray(targets), np.asarray(preds)
    pt = np.asarray(p_true, dtype=np.float64)
    g = np.asarray(groups, dtype=str)
    unit = "writer" if clusters is not None else "image"
    cl = np.asarray(clusters) if clusters is not None else np.arange(len(t))
    _check(t, p, pt, g, cl)
    _check_boot(n_boot, confidence)
    names = sorted(set(g.tolist())) if order is None else list(order)
    unknown = sorted(set(g.tolist()) - set(names))
    if unknown:
        raise DataError(f"groups {unknown[:5]} are not in the group order {names[:5]}")
    k = len(classes)
    frame = metric_frame(t, p, pt, g, k)
    by_group = frame.by_group
    counts = GroupCounts.build(t, p, pt, g, cl, names, k)
    sizes = counts.counts[:, :, 0].sum(axis=0)
    writers = (counts.counts[:, :, 0] > 0).sum(axis=0)
    draws = cluster_bootstrap_draws(counts, n_boot, seed)
    eligible = np.flatnonzero(sizes >= min_group)
    warns: list[str] = []
    records = []
    for i, name in enumerate(names):
        if sizes[i] == 0:
            continue
        row = by_group.loc[name]
        small = bool(sizes[i] < min_group)
        if small:
            warns.append(f"group {name!r} has {int(sizes[i])} images (< {min_group}): its "
                         "figures are shown but it is left out of comparisons and ratios")
        records.append({
            "name": name, "samples": int(sizes[i]), "clusters": int(writers[i]),
            "errors": round(counts.counts[:, i, 1].sum()), "small": small,
            **{m: float(row[m]) for m in ("accuracy", "error_rate", "log_loss")},
            **{f"{m}_ci": _ci(draws[m][:, i], confidence)
               for m in ("accuracy", "error_rate", "log_loss")},
            "recall": {c: _num(row[f"recall_{j}"]) for j, c in enumerate(classes)},
            "precision": {c: _num(row[f"precision_{j}"]) for j, c in enumerate(classes)},
        })
    overall = frame.overall
    result: dict[str, Any] = {
        "groups": records,
        "overall": {"samples": len(t), "accuracy": float(overall["accuracy"]),
                    "error_rate": float(overall["error_rate"]),
                    "log_loss": float(overall["log_loss"])},
        "bootstrap": {"unit": unit, "clusters": int(counts.counts.shape[0]), "n_boot": n_boot,
                      "confidence": confidence, "seed": seed},
        "min_group": min_group, "warnings": warns,
    }
    if len(eligible) < 2:
        warns.append(f"fewer than two groups of at least {min_group} images: nothing to compare")
        return result
    sub = {m: v[:, eligible] for m, v in draws.items()}
    point = counts.figures(counts.counts.sum(axis=0)[eligible])
    worst = int(eligible[int(np.argmin(point["accuracy"]))])
    result["worst_group"] = {"name": names[worst], "accuracy": float(point["accuracy"].min()),
                             "accuracy_ci": _ci(sub["accuracy"].min(axis=1), confidence)}
    result["differences"], result["ratios"] = {}, {}
    for m in ("accuracy", "error_rate", "log_loss"):
        diff, ratio = _spread(point[m])
        d_draws, r_draws = _spread(sub[m])
        result["differences"][m] = {"value": float(diff), "ci": _ci(d_draws, confidence)}
        if m != "log_loss":
            result["ratios"][m] = {"value": float(ratio), "ci": _ci(r_draws, confidence)}
    # multiclass equal opportunity: per class, the largest recall gap between groups
    gaps, gap_draws = _spread(np.swapaxes(point["recall"], 0, 1)), _spread(
        np.swapaxes(sub["recall"], 1, 2))
    result["equal_opportunity"] = {
        c: {"recall_gap": _num(gaps[0][j]), "ci": _ci(gap_draws[0][:, j], confidence),
            "lowest": names[int(eligible[int(np.nanargmin(point["recall"][:, j]))])]
            if np.isfinite(point["recall"][:, j]).any() else None}
        for j, c in enumerate(classes)}
    if len(eligible) == 2:
        a, b = (names[i] for i in eligible)
        gap = point["error_rate"][0] - point["error_rate"][1]
        result["gap"] = {"definition": f"{a} error rate minus {b} error rate",
                         "value": float(gap),
                         "ci": _ci(sub["error_rate"][:, 0] - sub["error_rate"][:, 1],
                                   confidence)}
        lo, hi = result["gap"]["ci"]
        result["gap"]["significant"] = bool(not (lo <= 0.0 <= hi))
    return result


def _num(v: Any) -> float | None:
    f = float(v)
    return f if math.isfinite(f) else None


def writer_breakdown(targets: np.ndarray, preds: np.ndarray, writers: np.ndarray, *,
                     worst: int = 10, share: float = 0.1, n_boot: int = 1000,
                     confidence: float = 0.95, seed: int | None = 0) -> dict[str, Any]:
    """Per-writer accuracy: its distribution, the worst writers and the share of all errors
    that the worst ``share`` of writers account for (with a writer-bootstrap interval).

    Raises:
        DataError: arrays of different lengths or no images.
    """
    t, p, w = np.asarray(targets), np.asarray(preds), np.asarray(writers)
    if not (len(t) == len(p) == len(w)) or len(t) == 0:
        raise DataError(f"writer figures need one writer per image: {len(t)} targets, "
                        f"{len(p)} predictions, {len(w)} writers")
    _check_boot(n_boot, confidence)
    ids, inv = np.unique(w, return_inverse=True)
    inv = inv.reshape(-1)
    n = np.bincount(inv).astype(np.float64)
    errors = np.bincount(inv, weights=(t != p).astype(np.float64))
    acc = 1 - errors / n
    order = np.lexsort((-n, acc))  # lowest accuracy first; more digits first on ties
    top = max(1, math.ceil(share * len(ids)))

    def worst_share(err: np.ndarray, cnt: np.ndarray) -> float:
        total = err.sum()
        if total == 0:
            return 0.0
        present = cnt > 0
        a = np.where(present, 1 - err / np.maximum(cnt, 1), np.inf)
        k = max(1, math.ceil(share * present.sum()))
        return float(err[np.argsort(a, kind="stable")[:k]].sum() / total)

    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(ids), np.full(len(ids), 1.0 / len(ids)), size=n_boot)
    boot = [worst_share(d * errors, d * n) for d in draws]
    hist, edges = np.histogram(acc, bins=np.linspace(0, 1, 21))
    return {
        "writers": len(ids),
        "accuracy_mean": float(acc.mean()), "accuracy_median": float(np.median(acc)),
        "accuracy_min": float(acc.min()),
        "perfect_writers": int((errors == 0).sum()),
        "histogram": {"edges": [float(e) for e in edges], "counts": hist.tolist()},
        "worst": [{"writer": int(ids[i]) if np.issubdtype(ids.dtype, np.integer) else str(ids[i]),
                   "images": int(n[i]), "errors": int(errors[i]), "accuracy": float(acc[i])}
                  for i in order[:worst]],
        "worst_share": {"writers": top, "fraction_of_writers": share,
                        "share_of_errors": worst_share(errors, n),
                        "ci": _ci(np.asarray(boot), confidence)},
        "per_writer_accuracy": acc.tolist(), "writer_ids": ids.tolist(),
    }
