"""The Python API, mirroring the CLI: ``cnnlab.train(...)``, ``cnnlab.load(path)`` and
``model.predict(images)`` -- a thin face over the floors below (inference, training,
deploy)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cnnlab.config import resolve_run_config
from cnnlab.errors import ConfigError
from cnnlab.inference.model import Model, Prediction

__all__ = ["Model", "Prediction", "load", "train"]


def load(path: str | Path, *, device: str | torch.device = "cpu",
         engine: str = "torch", spinning: bool = True, threads: int = 0) -> Model:
    """Load a checkpoint file, or a run directory's ``model.pt``, as a :class:`Model`.

    ``engine`` picks what runs ``predict``: ``torch``, ``onnx`` (ONNX Runtime, exported once
    into a cache and parity-checked), ``int8`` (ONNX Runtime on the model's INT8
    quantisation, accepted only within 0.1 point of FP32 accuracy on validation images), or
    ``auto`` (the fastest available at batch 1, measured the first time and remembered; see
    :mod:`cnnlab.deploy.engine`). For ONNX Runtime, ``threads`` sets its threads per run (0:
    its default, one per core) and ``spinning=False`` lets its idle threads sleep (what a
    service wants).

    Raises:
        CheckpointError: missing, corrupt or incompatible checkpoint.
        ConfigError: an unknown engine. ExportError: the engine cannot run the model.
    """
    from cnnlab.deploy.engine import load_with_engine

    return load_with_engine(path, device=device, engine=engine, spinning=spinning,
                            threads=threads)


def train(
    *,
    out: str | Path | None = None,
    recipe: str | None = None,
    config: str | Path | dict[str, Any] | None = None,
    set: Sequence[str] = (),
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    **flags: Any,
) -> Model:
    """Train a model, like ``cnnlab train``; returns the best model.

    Keyword arguments are the CLI's flags with underscores (``model``, ``dataset``,
    ``data_dir``, ``epochs``, ``batch_size``, ``lr``, ``optimizer``, ``scheduler``, ``seed``,
    ``device``, ...). ``config`` is a TOML path or a nested dict; ``set`` holds ``key=value``
    overrides. Settings layer as for the CLI, through the same resolver
    (:func:`cnnlab.config.resolve_run_config`): ``recipe`` < ``config`` < ``set`` < keyword
    flags; with ``resume``, the run's saved ``config.toml`` is the base. The result's
    ``metrics`` and ``history`` hold the figures.

    Raises:
        ConfigError, DataError, DeviceError: invalid options or data.
    """
    from cnnlab.training.loop import fit

    if resume and out is None:
        raise ConfigError("resume=True needs out=, the run directory to continue")
    cfg = resolve_run_config(recipe=recipe, file=config, overrides=set, flags=flags,
                             resume_dir=out if resume else None)
    result = fit(cfg, out_dir=out, resume=resume, overwrite=overwrite, progress=progress)
    model = Model(result.model, result.classes, result.preprocessing, metrics=result.metrics,
                  config=result.config.to_dict(),
                  path=str(result.checkpoint) if result.checkpoint else None,
                  history=result.history, device=next(result.model.parameters()).device)
    return model
