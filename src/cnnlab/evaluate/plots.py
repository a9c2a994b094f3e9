"""Evaluation figures as PNG files: confusion matrix, ROC curves, training curves, reliability
diagram, per-class F1, sample predictions, confident mistakes and most-confused pairs.

Every function takes plain data (lists, numpy arrays or tensors) and an output path, draws with
matplotlib's Agg backend (no display needed), writes the PNG atomically and returns its path.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "plot_confident_mistakes",
    "plot_confused_pairs",
    "plot_confusion_matrix",
    "plot_per_class_f1",
    "plot_reliability",
    "plot_roc_curves",
    "plot_sample_grid",
    "plot_training_curves",
]

_WRONG = "#c0392b"
_RIGHT = "#1e7b34"


def _figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1
            ) -> tuple[Figure, np.ndarray]:
    """A figure and its (nrows, ncols) array of axes."""
    # the object-oriented API with an Agg canvas: no pyplot state, no display, thread-safe enough
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig: Any, path: str | Path) -> Path:
    from cnnlab._io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    data = buf.getvalue()
    return atomic_write_bytes(path, lambda f: f.write(data))


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def plot_confusion_matrix(cm: Any, classes: Sequence[str], path: str | Path, *,
                          title: str = "Confusion matrix") -> Path:
    """Two heatmaps side by side: counts, and fractions of each true class (rows sum to 1)."""
    counts = _np(cm).astype(np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    k = len(classes)
    side = max(4.0, 0.5 * k + 2)
    fig, axes = _figure((2 * side + 1, side), 1, 2)
    for ax, values, sub, fmt in ((axes[0, 0], counts, "counts", "d"),
                                 (axes[0, 1], norm, "fraction of true class", ".2f")):
        im = ax.imshow(values, cmap="Blues", vmin=0)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(f"{title} ({sub})")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_xticks(range(k), labels=list(classes), rotation=45 if k > 10 else 0)
        ax.set_yticks(range(k), labels=list(classes))
        if k <= 20:  # numbers in cells stay readable up to about 20 classes
            high = values.max() if values.size else 0
            for i in range(k):
                for j in range(k):
                    v = values[i, j]
                    ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7,
                            color="white" if high and v > 0.6 * high else "black")
    fig.subplots_adjust(wspace=0.3)  # keeps the right heatmap's label off the left colorbar
    return _save(fig, path)


def plot_roc_curves(curves: Sequence[tuple[Any, Any, Any]], aucs: Sequence[float],
                    classes: Sequence[str], path: str | Path, *,
                    micro_auc: float | None = None) -> Path:
    """One-vs-rest ROC curves (``curves[c] = (fpr, tpr, thresholds)``), AUC in the legend."""
    fig, axes = _figure((6.5, 5.5))
    ax = axes[0, 0]
    cmap = _class_colours(len(classes))
    for c, ((fpr, tpr, _), auc, name) in enumerate(zip(curves, aucs, classes, strict=True)):
        label = f"{name} (AUC {auc:.4f})" if auc == auc else f"{name} (AUC undefined)"
        ax.plot(_np(fpr), _np(tpr), lw=1.2, color=cmap[c], label=label)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="chance")
    title = "ROC curves, one class vs rest"
    if micro_auc is not None:
        title += f" (micro AUC {micro_auc:.4f})"
    ax.set_title(title)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _class_colours(k: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(k)]


def _column(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    out = []
    for r in rows:
        v = r.get(key)
        try:
            out.append(float(v) if v not in (None, "") else math.nan)
        except (TypeError, ValueError):
            out.append(math.nan)
    return np.array(out)


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Loss and accuracy per epoch, training and validation, from history rows (the columns of
    ``history.csv``; empty validation values are skipped)."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = _figure((11, 4), 1, 2)
    epochs = _column(history, "epoch")
    for ax, metric in ((axes[0, 0], "loss"), (axes[0, 1], "accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = _column(history, f"{split}_{metric}")
            if np.isfinite(values).any():
                ok = np.isfinite(values)
                name = "training" if split == "train" else "validation"
                ax.plot(epochs[ok], values[ok], style, ms=3, label=name)
        ax.set_title(f"{metric} per epoch")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return _save(fig, path)


def plot_reliability(bins: Mapping[str, Any], path: str | Path, *,
                     ece: float | None = None) -> Path:
    """Reliability diagram from :func:`expected_calibration_error`'s bins: accuracy per
    confidence bin against the diagonal, with the bin counts below."""
    edges = _np(bins["edges"]).astype(float)
    acc, conf, count = (_np(bins[k]).astype(float) for k in ("accuracy", "confidence", "count"))
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig, axes = _figure((6, 7), 2, 1)
    ax, ax_n = axes[0, 0], axes[1, 0]
    full = count > 0
    ax.bar(centres[full], acc[full], width=width[full], edgecolor="black", alpha=0.8,
           label="accuracy in bin")
    ax.plot(conf[full], acc[full], "o", color=_WRONG, ms=3, label="mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    title = "Reliability diagram"
    if ece is not None:
        title += f" (ECE {ece:.4f})"
    ax.set_title(title)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="best", fontsize=8)
    ax_n.bar(centres, count, width=width, edgecolor="black", color="grey")
    ax_n.set_yscale("log" if count.max(initial=0) > 100 else "linear")
    ax_n.set_xlim(0, 1)
    ax_n.set_xlabel("confidence (top probability)")
    ax_n.set_ylabel("images")
    ax_n.set_title("images per confidence bin")
    fig.subplots_adjust(hspace=0.4)
    return _save(fig, path)


def plot_per_class_f1(f1: Mapping[str, float], path: str | Path, *,
                      macro_f1: float | None = None) -> Path:
    """Bars of each class's F1, the macro average as a line."""
    names, values = list(f1), [float(v) for v in f1.values()]
    fig, axes = _figure((max(5.0, 0.5 * len(names) + 2), 4))
    ax = axes[0, 0]
    ax.bar(range(len(names)), values, color="#3b6ea8")
    ax.set_xticks(range(len(names)), labels=names, rotation=45 if len(names) > 10 else 0)
    low = min(values, default=0.0)
    ax.set_ylim(max(0.0, low - 0.05) if low > 0.5 else 0.0, 1.0)
    if macro_f1 is not None:
        ax.axhline(macro_f1, color=_WRONG, ls="--", label=f"macro F1 {macro_f1:.4f}")
        ax.legend(loc="lower right")
    ax.set_title("F1 score per class")
    ax.set_xlabel("class")
    ax.set_ylabel("F1")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _image_grid(images: np.ndarray, titles: list[str], colours: list[str], title: str,
                path: str | Path, cols: int) -> Path:
    # one montage in one axes with text labels: one subplot per image is ten times slower
    n, (c, h, w) = len(images), images.shape[1:]
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    pad_x, pad_y = max(2, w // 8), max(2, h // 8) + h // 2  # room for two lines of label
    tile_h, tile_w = h + pad_y, w + pad_x
    canvas = np.full((rows * tile_h, cols * tile_w, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        y0, x0 = r * tile_h + pad_y, q * tile_w + pad_x // 2
        canvas[y0:y0 + h, x0:x0 + w] = np.asarray(img, dtype=np.uint8).transpose(1, 2, 0)
    fig, axes = _figure((1.5 * cols, 1.7 * rows + 0.6))
    ax = axes[0, 0]
    ax.imshow(canvas[:, :, 0] if c == 1 else canvas, cmap="gray" if c == 1 else None,
              vmin=0, vmax=255, interpolation="nearest")
    for i, (label, colour) in enumerate(zip(titles, colours, strict=True)):
        r, q = divmod(i, cols)
        ax.text(q * tile_w + tile_w / 2, r * tile_h + pad_y - 1, label, ha="center",
                va="bottom", fontsize=6.5, color=colour)
    ax.set_axis_off()
    ax.set_title(title)
    return _save(fig, path)


def plot_sample_grid(images: Any, targets: Any, preds: Any, classes: Sequence[str],
                     path: str | Path, *, cols: int = 8) -> Path:
    """Images (uint8 (N, C, H, W)) titled ``true / predicted``; wrong predictions in red."""
    imgs, t, p = _np(images), _np(targets).astype(int), _np(preds).astype(int)
    titles = [f"true {classes[a]} / pred {classes[b]}" for a, b in zip(t, p, strict=True)]
    colours = [_RIGHT if a == b else _WRONG for a, b in zip(t, p, strict=True)]
    wrong = int((t != p).sum())
    return _image_grid(imgs, titles, colours, f"Sample predictions ({wrong} of {len(t)} wrong, "
                                              "in red)", path, cols)


def plot_confident_mistakes(images: Any, targets: Any, preds: Any, confidence: Any,
                            classes: Sequence[str], path: str | Path, *, cols: int = 8) -> Path:
    """The given mistakes (already chosen, most confident first) with true and predicted label
    and the predicted class's probability. No mistakes draws a figure that says so."""
    imgs, t, p, conf = (_np(images), _np(targets).astype(int), _np(preds).astype(int),
                        _np(confidence).astype(float))
    if len(t) == 0:
        fig, axes = _figure((5, 1.5))
        axes[0, 0].axis("off")
        axes[0, 0].text(0.5, 0.5, "No mistakes on this split.", ha="center", va="center")
        return _save(fig, path)
    titles = [f"true {classes[a]} / pred {classes[b]}\np={c:.3f}"
              for a, b, c in zip(t, p, conf, strict=True)]
    return _image_grid(imgs, titles, [_WRONG] * len(t), "Most confident mistakes", path, cols)


def plot_confused_pairs(pairs: Sequence[tuple[str, str, int]], path: str | Path) -> Path:
    """Horizontal bars of the most frequent (true, predicted, count) errors, largest on top."""
    fig, axes = _figure((6.5, max(2.5, 0.35 * len(pairs) + 1.2)))
    ax = axes[0, 0]
    if not pairs:
        ax.axis("off")
        ax.text(0.5, 0.5, "No mistakes on this split.", ha="center", va="center")
        return _save(fig, path)
    labels = [f"true {a} \u2192 pred {b}" for a, b, _ in pairs][::-1]
    counts = [int(n) for _, _, n in pairs][::-1]
    ax.barh(range(len(pairs)), counts, color=_WRONG)
    ax.set_yticks(range(len(pairs)), labels=labels)
    for y, n in enumerate(counts):
        ax.text(n, y, f" {n}", va="center", fontsize=8)
    ax.set_title("Most-confused class pairs")
    ax.set_xlabel("images misclassified")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)
