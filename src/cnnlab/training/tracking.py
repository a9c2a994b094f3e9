"""TensorBoard event files in the run directory, when the ``tensorboard`` extra is installed.

A run writes its per-epoch scalars, its resolved hyperparameters with the final metrics, and
(after the report) its figures into ``RUN_DIR/tensorboard/``; ``tensorboard --logdir runs``
then compares experiments. Without the package every call here does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["TensorBoard", "log_figures"]

log = logging.getLogger("cnnlab")

SUBDIR = "tensorboard"


def _writer_class() -> Any | None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the extra is not installed: tracking is off, silently by design
        return None
    return SummaryWriter


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, int | float | str | bool]:
    out: dict[str, int | float | str | bool] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        elif value is not None:
            out[name] = str(value)
    return out


class TensorBoard:
    """Per-run event writer; :meth:`open` returns ``None`` when TensorBoard is not installed."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    @classmethod
    def open(cls, run_dir: str | Path, *, resume_from_epoch: int = 0) -> TensorBoard | None:
        writer_class = _writer_class()
        if writer_class is None:
            return None
        # purge_step drops events a crashed run wrote past its last checkpoint
        writer = writer_class(str(Path(run_dir) / SUBDIR),
                              purge_step=resume_from_epoch + 1 if resume_from_epoch else None)
        return cls(writer)

    def epoch(self, row: Mapping[str, float]) -> None:
        """The history row of one epoch as scalars ``train/loss``, ``val/accuracy``, ..."""
        step = int(row["epoch"])
        for key, value in row.items():
            if key == "epoch" or value != value:  # skip the step itself and NaN (no val split)
                continue
            split, _, name = key.partition("_")
            tag = f"{split}/{name}" if split in ("train", "val") else f"run/{key}"
            self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()  # an interrupted run keeps the epochs it finished

    def close(self, config: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
        """Record the hyperparameters with the final metrics, then flush and close."""
        final = {f"final/{k}": float(v) for k, v in metrics.items()
                 if isinstance(v, int | float) and not isinstance(v, bool) and v == v}
        self.writer.add_hparams(_flatten(config), final, run_name=".")
        self.writer.close()


def log_figures(run_dir: str | Path, figures: Mapping[str, str | Path]) -> bool:
    """Add PNG figures (name -> path) to the run's event files; False when TensorBoard is off."""
    writer_class = _writer_class()
    if writer_class is None:
        return False
    import numpy as np
    from PIL import Image

    writer = writer_class(str(Path(run_dir) / SUBDIR))
    try:
        for name, path in figures.items():
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            writer.add_image(f"figures/{name}", pixels, 0, dataformats="HWC")
    finally:
        writer.close()
    return True
