"""Explanation figures as PNG files (matplotlib's Agg canvas, no display): attribution overlays
on the input as the model saw it, Grad-CAM panels, first-layer filters, feature maps, the t-SNE
map and the deletion / insertion curves."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["overlay_rgb", "plot_curves", "plot_explanation", "plot_feature_maps",
           "plot_filters", "plot_panels", "plot_tsne"]

_WRONG, _RIGHT = "#c0392b", "#1e7b34"


def _figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig: Any, path: str | Path) -> Path:
    from cnnlab._io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    data = buf.getvalue()
    return atomic_write_bytes(path, lambda f: f.write(data))


def _rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (C, H, W) as (H, W, 3)."""
    img = np.asarray(image, dtype=np.uint8)
    return np.repeat(img[0][..., None], 3, axis=2) if img.shape[0] == 1 \
        else img[:3].transpose(1, 2, 0)


def overlay_rgb(image: np.ndarray, heat: np.ndarray, *, alpha: float = 0.6) -> np.ndarray:
    """The attribution ``heat`` (H, W) over the uint8 input ``image`` (C, H, W), as RGB uint8
    (H, W, 3): the positive evidence, scaled to its maximum, in the 'jet' colours, opaque where
    it is strongest."""
    from matplotlib import colormaps

    base = _rgb(image).astype(np.float32) / 255
    h = np.clip(np.asarray(heat, dtype=np.float32), 0, None)
    peak = float(h.max())
    h = h / peak if peak > 0 else h
    colour = colormaps["jet"](h)[..., :3]
    a = (alpha * h)[..., None]
    return (255 * ((1 - a) * base + a * colour)).round().astype(np.uint8)


def plot_explanation(image: np.ndarray, heat: np.ndarray, title: str, path: str | Path, *,
                     neighbours: np.ndarray | None = None, neighbour_titles: Sequence[str] = ()
                     ) -> Path:
    """The input as the model saw it, the attribution over it and, when given, the nearest
    training images in feature space."""
    extra = 0 if neighbours is None else len(neighbours)
    fig, axes = _figure((2.0 * (2 + extra), 2.6), 1, 2 + extra)
    panels = [(_rgb(image), "input the model saw"), (overlay_rgb(image, heat), "attribution")]
    panels += [(_rgb(n), t) for n, t in zip(neighbours if neighbours is not None else [],
                                            neighbour_titles, strict=False)]
    for ax, (img, sub) in zip(axes[0], panels, strict=False):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(sub, fontsize=8)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_panels(images: np.ndarray, heats: np.ndarray, titles: Sequence[str],
                colours: Sequence[str], title: str, path: str | Path, *, cols: int = 8) -> Path:
    """Pairs (input, overlay) in one montage, titled; no images draws a figure that says so."""
    if len(images) == 0:
        fig, axes = _figure((5, 1.5))
        axes[0, 0].axis("off")
        axes[0, 0].text(0.5, 0.5, f"{title}: none.", ha="center", va="center")
        return _save(fig, path)
    n, (_, h, w) = len(images), images.shape[1:]
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    gap, top = max(2, w // 8), h // 2 + 2
    tile_w, tile_h = 2 * w + gap, h + top
    canvas = np.full((rows * tile_h, cols * (tile_w + gap), 3), 255, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y0, x0 = r * tile_h + top, q * (tile_w + gap) + gap // 2
        canvas[y0:y0 + h, x0:x0 + w] = _rgb(images[i])
        canvas[y0:y0 + h, x0 + w:x0 + 2 * w] = overlay_rgb(images[i], heats[i])
    fig, axes = _figure((2.4 * cols, 1.8 * rows + 0.6))
    ax = axes[0, 0]
    ax.imshow(canvas, interpolation="nearest")
    for i, (label, colour) in enumerate(zip(titles, colours, strict=True)):
        r, q = divmod(i, cols)
        ax.text(q * (tile_w + gap) + gap // 2 + w, r * tile_h + top - 1, label, ha="center",
                va="bottom", fontsize=6.5, color=colour)
    ax.set_axis_off()
    ax.set_title(title)
    return _save(fig, path)


def plot_filters(weights: np.ndarray, path: str | Path, *, cols: int = 8) -> Path:
    """First-layer filters (F, C, k, k), each scaled to its own range (colour for 3 inputs)."""
    w = np.asarray(weights, dtype=np.float32)
    n = len(w)
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig, axes = _figure((1.0 * cols, 1.0 * rows + 0.5), rows, cols)
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i >= n:
            continue
        f = w[i]
        f = (f - f.min()) / (np.ptp(f) or 1.0)
        ax.imshow(f.transpose(1, 2, 0) if f.shape[0] == 3 else f.mean(0), cmap="gray",
                  interpolation="nearest")
    fig.suptitle(f"First-layer filters ({n}, {w.shape[2]}x{w.shape[3]})", fontsize=9)
    return _save(fig, path)


def plot_feature_maps(maps: Sequence[tuple[str, np.ndarray]], image: np.ndarray,
                      path: str | Path, *, per_stage: int = 8) -> Path:
    """One row per stage: the input, then the ``per_stage`` most active channels' maps."""
    rows = max(1, len(maps))
    fig, axes = _figure((1.2 * (per_stage + 1), 1.3 * rows + 0.4), rows, per_stage + 1)
    for r, (name, act) in enumerate(maps):
        strongest = np.argsort(-act.reshape(len(act), -1).mean(1), kind="stable")[:per_stage]
        axes[r, 0].imshow(_rgb(image), interpolation="nearest")
        axes[r, 0].set_title(f"{name}\n{act.shape[0]}x{act.shape[1]}x{act.shape[2]}",
                             fontsize=6)
        for q in range(per_stage):
            ax = axes[r, q + 1]
            if q < len(strongest):
                ax.imshow(act[strongest[q]], cmap="viridis", interpolation="nearest")
                ax.set_title(f"ch {int(strongest[q])}", fontsize=6)
        for ax in axes[r]:
            ax.set_axis_off()
    fig.suptitle("Feature maps of every stage (most active channels)", fontsize=9)
    return _save(fig, path)


def plot_tsne(coords: np.ndarray, targets: np.ndarray, preds: np.ndarray,
              classes: Sequence[str], path: str | Path) -> Path:
    """The 2-D map coloured by true class; mistakes marked with a black cross."""
    from matplotlib import colormaps

    fig, axes = _figure((7, 6))
    ax = axes[0, 0]
    cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for k, name in enumerate(classes):
        sel = targets == k
        if sel.any():
            ax.scatter(coords[sel, 0], coords[sel, 1], s=6, color=cmap(k % cmap.N), label=name)
    wrong = targets != preds
    if wrong.any():
        ax.scatter(coords[wrong, 0], coords[wrong, 1], s=28, marker="x", color="black",
                   linewidths=0.9, label=f"mistakes ({int(wrong.sum())})")
    ax.legend(fontsize=7, markerscale=2, loc="best", ncol=2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of penultimate features, {len(coords)} images, coloured by true class")
    return _save(fig, path)


def plot_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path) -> Path:
    """Mean deletion and insertion curves per method (``random``: the random ordering)."""
    fig, axes = _figure((10, 3.8), 1, 2)
    for name, (deletion, insertion) in curves.items():
        style = {"color": "grey", "linestyle": "--"} if name == "random" else {}
        for ax, curve in ((axes[0, 0], deletion), (axes[0, 1], insertion)):
            ax.plot(np.linspace(0, 1, len(curve)), curve, label=name, **style)
    for ax, what in ((axes[0, 0], "Deletion (lower is better)"),
                     (axes[0, 1], "Insertion (higher is better)")):
        ax.set_title(what)
        ax.set_xlabel("fraction of pixels removed" if "Del" in what else
                      "fraction of pixels inserted")
        ax.set_ylabel("probability of the explained class")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    return _save(fig, path)
