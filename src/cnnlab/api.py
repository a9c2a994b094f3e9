"""The Python API, mirroring the CLI: ``cnnlab.train(...)``, ``cnnlab.load(path)`` and
``model.predict(images)``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.config import flags_layer, load_config_file, parse_set, resolve_config
from cnnlab.errors import CheckpointError, ConfigError, ShapeError
from cnnlab.inference.preprocess import Preprocess
from cnnlab.models import Classifier, InputSpec, create_model

__all__ = ["Model", "Prediction", "load", "train"]

ImageLike = str | Path | bytes | np.ndarray | torch.Tensor | Any  # Any: PIL.Image.Image


@dataclass(frozen=True)
class Prediction:
    """One image's prediction: the label, its index and every class's probability."""

    label: str
    index: int
    probabilities: dict[str, float]

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:k]


class Model:
    """A trained classifier with the preprocessing it was trained with.

    Build one with :func:`load` or :func:`train`; ``predict`` accepts image files, bytes, PIL
    images, or arrays/tensors already in the model's form ((H, W) or (C, H, W), uint8 or [0, 1]).
    """

    def __init__(
        self,
        classifier: Classifier,
        classes: Sequence[str],
        preprocessing: dict[str, Any],
        *,
        metrics: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        path: str | None = None,
        history: list[dict[str, float]] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.classifier = classifier.eval()
        self.classes = list(classes)
        self.preprocessing = dict(preprocessing)
        self.preprocess = Preprocess.from_spec(self.preprocessing)  # how files become input
        self.metrics = dict(metrics or {})
        self.config = dict(config or {})
        self.path = path
        self.history = list(history or [])  # per-epoch figures when the model was just trained
        self.device = torch.device(device)
        self.classifier.to(self.device)
        self.onnx: Any = None  # an OnnxModel when load(engine=...) chose ONNX Runtime
        self.engine_name = "torch"  # torch | onnx | int8: what load() put in self.onnx

    @property
    def input_spec(self) -> InputSpec:
        return self.classifier.input_spec

    def __repr__(self) -> str:
        name = type(self.classifier).__name__
        return (f"Model({name}, input {self.input_spec.shape_str()}, "
                f"{len(self.classes)} classes, path={self.path!r})")

    # --- preprocessing ----------------------------------------------------------------------
    def to_input(self, image: ImageLike) -> torch.Tensor:
        """One image as a uint8 tensor (C, H, W) in the model's input form.

        Raises:
            DataError: an unreadable file or an image with no ink (digit models).
            ShapeError: an array that is not (H, W) or (C, H, W) of the model's size.
        """
        if isinstance(image, np.ndarray | torch.Tensor):
            return self._array_input(image)
        arr = self.input_array(image)
        return torch.from_numpy(arr if arr.flags.writeable else arr.copy())

    def input_array(self, image: ImageLike) -> np.ndarray:
        """:meth:`to_input` as a numpy array (C, H, W), uint8, without PyTorch; may be
        read-only. Files, bytes and PIL images go through :attr:`preprocess`, the one
        preprocessing the checkpoint records; arrays are taken as model input."""
        if isinstance(image, np.ndarray | torch.Tensor):
            return self._array_input(image).numpy()
        from PIL import Image

        from cnnlab.data import read_image

        pil = image if isinstance(image, Image.Image) else read_image(image)
        return self.preprocess(pil)

    def _array_input(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        spec = self.input_spec
        x = torch.as_tensor(image)
        if x.dim() == 2:
            x = x.unsqueeze(0)
        if x.dim() != 3 or tuple(x.shape) != spec.shape:
            raise ShapeError(
                f"an array image must have shape ({spec.height}, {spec.width}) or "
                f"{spec.shape}; got {tuple(x.shape)}. Pass a file or PIL image to have it "
                "resized, or resize the array first."
            )
        if x.dtype == torch.uint8:
            return x
        if x.is_floating_point():
            return (x.clamp(0, 1) * 255).round().to(torch.uint8)
        return x.clamp(0, 255).to(torch.uint8)

    # --- prediction -------------------------------------------------------------------------
    def predict_proba(self, images: Iterable[ImageLike] | torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, num_classes) for a batch of images (or one image)."""
        spec = self.input_spec
        if isinstance(images, str | Path | bytes) or type(images).__module__.startswith("PIL"):
            images = [images]  # one image, not a sequence of characters or bytes
        if (isinstance(images, torch.Tensor) and images.dtype == torch.uint8
                and tuple(images.shape[1:]) == spec.shape and images.device.type == "cpu"):
            batch = images  # already model input: nothing to convert
        elif isinstance(images, torch.Tensor) and images.dim() == 4:
            batch = torch.stack([self._array_input(x) for x in images])
        else:
            batch = torch.stack([self.to_input(im) for im in images])
        return F.softmax(self.logits(batch), dim=1)

    def logits(self, batch: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """Float32 logits (N, num_classes) of a uint8 batch already in input form, from the
        engine this model runs on (:attr:`engine`): what predict, evaluate and the service
        all compute."""
        from cnnlab.evaluate.inference import predict_logits

        if self.onnx is not None:
            return self.onnx.predict_logits(batch, batch_size=batch_size).float()
        spec = self.input_spec
        return predict_logits(self.classifier, batch, spec.mean, spec.std,
                              batch_size=batch_size, device=self.device).float().cpu()

    @property
    def engine(self) -> str:
        """What runs predictions: ``torch``, ``onnx`` (ONNX Runtime, FP32) or ``int8`` (ONNX
        Runtime on the INT8 quantisation)."""
        return self.engine_name

    def predict(self, images: Iterable[ImageLike] | torch.Tensor) -> list[Prediction]:
        """Predictions for a batch of images (files, bytes, PIL images, arrays or a tensor)."""
        probs = self.predict_proba(images)
        out = []
        for row in probs.tolist():
            idx = int(np.argmax(row))
            out.append(Prediction(self.classes[idx], idx,
                                  {c: float(p) for c, p in zip(self.classes, row, strict=True)}))
        return out


def load(path: str | Path, *, device: str | torch.device = "cpu",
         engine: str = "torch", spinning: bool = True, threads: int = 0) -> Model:
    """Load a checkpoint file, or a run directory's ``model.pt``, as a :class:`Model`.

    ``engine`` picks what runs ``predict``: ``torch``, ``onnx`` (ONNX Runtime, exported once
    into a cache and parity-checked), ``int8`` (ONNX Runtime on the model's INT8
    quantisation, accepted only within 0.1 point of FP32 accuracy), or ``auto`` (the fastest
    available at batch 1, measured the first time and remembered; see
    :mod:`cnnlab.deploy.engine`). For ONNX Runtime, ``threads`` sets its threads per run (0:
    its default, one per core) and ``spinning=False`` lets its idle threads sleep (what a
    service wants).

    Raises:
        CheckpointError: missing, corrupt or incompatible checkpoint.
    """
    from cnnlab.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    name, kwargs = ckpt["model"]["name"], dict(ckpt["model"]["kwargs"])
    try:
        classifier = create_model(name, **kwargs)
        classifier.input_spec = InputSpec.from_dict(ckpt["input_spec"])
        classifier.load_state_dict(ckpt["state_dict"])
    except (ConfigError, RuntimeError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {ckpt['path']!r} does not fit model {name!r} with {kwargs}: {first}"
        ) from e
    try:
        pre = Preprocess.from_spec(ckpt["preprocessing"])
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {ckpt['path']!r} is refused: {e}; upgrade cnnlab, or "
                              "retrain the model with this version") from e
    if pre.shape != classifier.input_spec.shape:
        raise CheckpointError(
            f"checkpoint {ckpt['path']!r}: its preprocessing makes {pre.shape} inputs but the "
            f"model takes {classifier.input_spec.shape}; the file is inconsistent, retrain it")
    model = Model(classifier, ckpt["classes"], ckpt["preprocessing"], metrics=ckpt["metrics"],
                  config=ckpt["config"], path=ckpt["path"], device=device)
    if engine != "torch":
        from cnnlab.deploy.engine import int8_engine, onnx_engine, pick_engine

        chosen = pick_engine(model, engine)
        if chosen == "onnx":
            model.onnx = onnx_engine(ckpt["path"], spinning=spinning, threads=threads)
        elif chosen == "int8":
            model.onnx = int8_engine(ckpt["path"], spinning=spinning, threads=threads)
        model.engine_name = chosen
    return model


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
    overrides. The result's ``metrics`` and ``history`` hold the figures.

    Raises:
        ConfigError, DataError, DeviceError: invalid options or data.
    """
    from cnnlab.training.loop import fit

    file_layer = load_config_file(config) if isinstance(config, str | Path) else (config or {})
    if resume:
        if out is None:
            raise ConfigError("resume=True needs out=, the run directory to continue")
        saved = Path(out) / "config.toml"
        base = load_config_file(saved) if saved.is_file() else {}
        cfg = resolve_config(base, file_layer, parse_set(list(set)), flags_layer(flags),
                             recipe=recipe)
    else:
        cfg = resolve_config(file_layer, parse_set(list(set)), flags_layer(flags), recipe=recipe)
    result = fit(cfg, out_dir=out, resume=resume, overwrite=overwrite, progress=progress)
    model = Model(result.model, result.classes, result.preprocessing, metrics=result.metrics,
                  config=result.config.to_dict(),
                  path=str(result.checkpoint) if result.checkpoint else None,
                  history=result.history, device=next(result.model.parameters()).device)
    return model
