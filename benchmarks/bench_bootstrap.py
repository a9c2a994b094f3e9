"""Is cnnlab's own bootstrap worth keeping over ``scipy.stats.bootstrap``? Prints one JSON object.

Times ``cnnlab.evaluate.bootstrap_ci`` (multinomial draws over the confusion-matrix cells)
against ``scipy.stats.bootstrap`` (paired, vectorised, percentile method) on the same 10,000
labels of 10 classes with 1000 resamples, for accuracy and macro F1, in the same process; the
median of ``--repeats`` runs of each, and the intervals both give.

    python benchmarks/bench_bootstrap.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from _common import machine

N, CLASSES, RESAMPLES, CONFIDENCE = 10_000, 10, 1000, 0.95


def accuracy_statistic(targets: np.ndarray, preds: np.ndarray, axis: int = -1) -> np.ndarray:
    return (targets == preds).mean(axis=axis)


def macro_f1_statistic(targets: np.ndarray, preds: np.ndarray, axis: int = -1) -> np.ndarray:
    """Macro F1 of every resample at once: one confusion matrix per row by one ``bincount``."""
    t, p = np.moveaxis(targets, axis, -1), np.moveaxis(preds, axis, -1)
    rows = t.reshape(-1, t.shape[-1]), p.reshape(-1, p.shape[-1])  # (B, n) each
    b = len(rows[0])
    cells = np.arange(b)[:, None] * CLASSES**2 + rows[0] * CLASSES + rows[1]
    cm = np.bincount(cells.ravel(), minlength=b * CLASSES**2).reshape(b, CLASSES, CLASSES)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    den = cm.sum(axis=2) + cm.sum(axis=1)  # 2TP + FP + FN
    f1 = np.divide(2 * tp, den, out=np.zeros(tp.shape), where=den > 0)
    return f1.mean(axis=1).reshape(t.shape[:-1])


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each (default 7)")
    args = parser.parse_args()

    from scipy import stats

    from cnnlab.evaluate import bootstrap_ci

    rng = np.random.default_rng(0)
    targets = rng.integers(0, CLASSES, N)
    preds = np.where(rng.random(N) < 0.9, targets, rng.integers(0, CLASSES, N))
    out: dict[str, object] = {"labels": N, "classes": CLASSES, "resamples": RESAMPLES,
                              "repeats": args.repeats, "machine": machine()}
    for metric, statistic in (("accuracy", accuracy_statistic),
                              ("macro_f1", macro_f1_statistic)):
        ours_s, ours = median_seconds(
            lambda m=metric: bootstrap_ci(targets, preds, m, n_boot=RESAMPLES,
                                          confidence=CONFIDENCE, seed=0), args.repeats)
        scipy_s, res = median_seconds(
            lambda s=statistic: stats.bootstrap(
                (targets, preds), s, paired=True, vectorized=True, n_resamples=RESAMPLES,
                confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(0)),
            args.repeats)
        ci = res.confidence_interval
        out[metric] = {"cnnlab_ms": round(ours_s * 1e3, 2), "scipy_ms": round(scipy_s * 1e3, 2),
                       "scipy_over_cnnlab": round(scipy_s / ours_s, 1),
                       "cnnlab_interval": [round(ours[1], 4), round(ours[2], 4)],
                       "scipy_interval": [round(float(ci.low), 4), round(float(ci.high), 4)]}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
