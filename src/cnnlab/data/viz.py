"""Pictures of datasets: a labelled grid of sample images per class (the paper's Fig. 2).

Uses matplotlib's object API with the Agg canvas, so no display and no global pyplot state
is involved, and writes files atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cnnlab.errors import ConfigError, DataError

from .datasets import ImageDataset
from .idx import atomic_path

__all__ = ["sample_grid"]

_PAD = 2  # pixels between cells, at the images' own resolution


def sample_grid(
    dataset: ImageDataset,
    out_path: str | os.PathLike[str],
    per_class: int = 8,
    seed: int = 0,
    *,
    cell_inches: float = 0.8,
    dpi: int = 100,
    title: str | None = None,
) -> Path:
    """Draw ``per_class`` random images of every class, one row per class, each labelled.

    Each image has its class name underneath. A class with fewer images leaves its
    remaining cells empty. The format follows the
    suffix of ``out_path`` (``.png``, ``.pdf``, ``.svg``, ...).

    Args:
        dataset: the images to draw from.
        out_path: the file to write (its directory must exist).
        per_class: images per class (columns).
        seed: picks the samples; the same seed gives the same picture.
        cell_inches: size of one cell in the figure.
        dpi: resolution of raster output.
        title: a title above the grid (default: the dataset's name).

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: ``per_class`` is not a positive int.
        DataError: the dataset is empty.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ConfigError(
            f"The 'per_class' parameter of sample_grid must be a positive int. "
            f"Got {per_class!r} instead."
        )
    if len(dataset) == 0:
        raise DataError(f"dataset {dataset.name!r} is empty: nothing to draw")
    out_path = Path(out_path)
    rng = np.random.default_rng(seed)
    targets = dataset.targets.numpy()
    images = dataset.images.permute(0, 2, 3, 1).numpy()  # (N, H, W, C), a view
    c, h, w = dataset.shape
    rows, cols = dataset.num_classes, per_class
    gap = max(4, round(0.35 * h))  # white band under each image for its label
    cell_h, cell_w = h + gap + _PAD, w + _PAD
    # One mosaic and one imshow: far faster than an Axes per image.
    mosaic = np.full((rows * cell_h + _PAD, cols * cell_w + _PAD, c), 255, dtype=np.uint8)
    labels = []  # (x, y, text) in mosaic pixels
    for row, name in enumerate(dataset.classes):
        members = np.flatnonzero(targets == row)
        picks = rng.choice(members, size=min(per_class, len(members)), replace=False)
        for col, index in enumerate(picks):
            top, left = _PAD + row * cell_h, _PAD + col * cell_w
            mosaic[top : top + h, left : left + w] = images[index]
            labels.append((left + w / 2, top + h + gap / 2, name))

    title_inches = 0.35
    width = cols * cell_inches
    height = width * mosaic.shape[0] / mosaic.shape[1]
    fig = Figure(figsize=(width, height + title_inches))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, height / (height + title_inches)))
    ax.set_axis_off()
    ax.imshow(mosaic[:, :, 0] if c == 1 else mosaic, cmap="gray" if c == 1 else None,
              vmin=0, vmax=255, interpolation="nearest", aspect="auto")
    fontsize = max(5.0, min(9.0, 72 * cell_inches * gap / cell_h * 0.8))
    for x, y, text in labels:
        ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, clip_on=True)
    fig.suptitle(title if title is not None else dataset.name, fontsize=10)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=out_path.suffix.lstrip(".") or "png", facecolor="white")
    return out_path
