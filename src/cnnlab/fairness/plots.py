"""Figures of the fairness section: accuracy by group with intervals, and the per-writer
accuracy histogram (PNG, matplotlib's Agg canvas, no pyplot state)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_group_accuracy", "plot_writer_histogram"]


def _figure(figsize: tuple[float, float]) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig: Any, path: Path) -> Path:
    from cnnlab._io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    data = buf.getvalue()
    return atomic_write_bytes(path, lambda f: f.write(data))


def plot_group_accuracy(groups: list[dict[str, Any]], path: Path, *, title: str) -> Path:
    """Horizontal bars of each group's error rate with its 95 % interval; small groups grey."""
    names = [g["name"] for g in groups][::-1]
    err = np.array([g["error_rate"] for g in groups][::-1]) * 100
    ci = np.array([g["error_rate_ci"] for g in groups][::-1], dtype=float) * 100
    lower = np.clip(err - ci[:, 0], 0, None)
    upper = np.clip(ci[:, 1] - err, 0, None)
    colours = ["#999999" if g["small"] else "#2c6fbb" for g in groups][::-1]
    fig, ax = _figure((6.5, 0.45 * len(names) + 1.2))
    ax.barh(names, err, xerr=np.nan_to_num(np.vstack([lower, upper])), color=colours,
            capsize=3)
    ax.set_xlabel("error rate (%), 95 % interval resampling writers")
    ax.set_title(title)
    return _save(fig, path)


def plot_writer_histogram(per_writer_accuracy: list[float], path: Path, *,
                          edges: list[float]) -> Path:
    """Histogram of per-writer accuracy (one count per writer)."""
    acc = np.asarray(per_writer_accuracy) * 100
    lo = max(0.0, float(np.floor(acc.min() / 2) * 2) - 2) if acc.size else 0.0
    bins = np.linspace(lo, 100, max(5, int((100 - lo) / 1) + 1))
    fig, ax = _figure((6.5, 3.0))
    ax.hist(acc, bins=bins, color="#2c6fbb", edgecolor="white")
    ax.set_xlabel("accuracy of a writer's digits (%)")
    ax.set_ylabel("writers")
    ax.set_title(f"Per-writer accuracy ({len(acc)} writers)")
    return _save(fig, path)
