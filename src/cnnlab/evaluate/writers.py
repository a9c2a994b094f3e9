"""The writer groups of MNIST's test split in the report: high-school students and Census
Bureau employees, taken from the QMNIST writer labels (:mod:`cnnlab.data.qmnist`).

The MNIST web page says the first 5,000 test digits come from Census Bureau employees (SD-3) and
the last 5,000 from students (SD-1). The QMNIST labels show the opposite: digits 0-4999 were all
written by students (NIST series hsf4), 5000-9999 by employees (hsf0, with one student digit).
So the groups are read from the labels, per digit, never from index ranges.

Intervals resample *writers* (a cluster bootstrap: all of a writer's digits together), since
digits of one writer are not independent; ``cnnlab fairness`` gives the full breakdown.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["MNIST_WRITER_GROUPS", "index_ranges", "writer_groups"]

#: (name, who) of each population, in report order (the names of cnnlab.data.qmnist)
MNIST_WRITER_GROUPS = (
    ("students", "high-school students (NIST hsf4)"),
    ("employees", "Census Bureau employees (NIST hsf0)"),
)
_POPULATION = {"students": "student", "employees": "employee"}


def index_ranges(indices: np.ndarray) -> str:
    """Sorted indices as ranges: ``0-4999, 8251``."""
    idx = np.sort(np.asarray(indices))
    if idx.size == 0:
        return "none"
    breaks = np.flatnonzero(np.diff(idx) != 1)
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    stops = np.concatenate([idx[breaks], [idx[-1]]])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in zip(starts, stops,
                                                                       strict=True))


def writer_groups(targets: Any, preds: Any, *, n_boot: int = 1000, confidence: float = 0.95,
                  seed: int | None = 0, data_dir: Any = None) -> dict[str, Any]:
    """Accuracy and error rate of MNIST test predictions per writer population, and the
    student minus employee error gap, with 95 % intervals that resample writers.

    Raises:
        DataError: not MNIST's 10,000 test targets in order (checked against the QMNIST
            labels), or predictions of another length.
        DatasetNotFoundError: the QMNIST labels are not found.
    """
    from cnnlab.data.qmnist import load_writers
    from cnnlab.errors import DataError

    t = np.asarray(targets.cpu() if hasattr(targets, "cpu") else targets)
    p = np.asarray(preds.cpu() if hasattr(preds, "cpu") else preds)
    if t.shape != (10000,) or p.shape != (10000,):
        raise DataError("writer groups are defined for the MNIST test split of 10,000 images; "
                        f"got {t.shape[0] if t.ndim else 0} targets and "
                        f"{p.shape[0] if p.ndim else 0} predictions")
    labels = load_writers("test", data_dir=data_dir)
    labels.check_targets(t)
    population = labels.population
    wrong = (t != p).astype(np.float64)
    ids, writer = np.unique(labels.writer, return_inverse=True)
    writer = writer.reshape(-1)
    n_w = len(ids)
    errors_w = np.bincount(writer, weights=wrong, minlength=n_w)
    count_w = np.bincount(writer, minlength=n_w).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_w, np.full(n_w, 1.0 / n_w), size=n_boot).astype(np.float64)
    q = [(1 - confidence) / 2, (1 + confidence) / 2]
    groups: list[dict[str, Any]] = []
    error_draws: list[np.ndarray] = []
    for name, who in MNIST_WRITER_GROUPS:
        mask = population == _POPULATION[name]
        # a writer belongs to one population: its digits all fall in or out of the group
        in_group = np.bincount(writer, weights=mask.astype(np.float64), minlength=n_w) > 0
        with np.errstate(invalid="ignore"):
            err = (draws[:, in_group] @ errors_w[in_group]) / (draws[:, in_group]
                                                               @ count_w[in_group])
        error_draws.append(err)  # paired across groups: the same writers in each draw
        err = err[np.isfinite(err)]
        n, e = int(mask.sum()), int(wrong[mask].sum())
        low, high = (float(v) for v in np.quantile(1 - err, q))
        groups.append({"name": name, "writers": f"{who}, {int(in_group.sum())} writers",
                       "images": index_ranges(np.flatnonzero(mask)), "samples": n, "errors": e,
                       "accuracy": 1 - e / n, "accuracy_ci": [low, high],
                       "error_rate": e / n,
                       "error_rate_ci": [float(v) for v in np.quantile(err, q)],
                       "writer_count": int(in_group.sum())})
    gap = groups[0]["error_rate"] - groups[1]["error_rate"]
    gap_draws = error_draws[0] - error_draws[1]
    low, high = (float(v) for v in np.quantile(gap_draws[np.isfinite(gap_draws)], q))
    return {"groups": groups, "gap": gap, "gap_ci": [low, high], "confidence": confidence,
            "gap_definition": "students' error rate minus employees' error rate",
            "interval": f"95 % bootstrap over the {n_w} test writers ({n_boot} draws)",
            "source": "QMNIST writer labels",
            "gap_significant": bool(not (low <= 0.0 <= high)) and math.isfinite(gap)}
