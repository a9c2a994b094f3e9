"""The loaded model: a classifier with the preprocessing and engine it predicts with.

:class:`Model` turns files, bytes, PIL images or arrays into input through the
:class:`~cnnlab.inference.Preprocess` the checkpoint records, and gets logits from its
:attr:`Model.runner` (an :class:`~cnnlab.inference.engines.Engine`: PyTorch here, ONNX Runtime
when :func:`cnnlab.load` chose it). :func:`load_model` loads a checkpoint on PyTorch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.errors import CheckpointError, ConfigError, ShapeError
from cnnlab.inference.engines import Engine, TorchEngine
from cnnlab.inference.ood import confidence_energy, read_ood_threshold
from cnnlab.inference.preprocess import Preprocess
from cnnlab.models import Classifier, InputSpec, create_model

__all__ = ["ImageLike", "Model", "Prediction", "load_model"]

ImageLike = str | Path | bytes | np.ndarray | torch.Tensor | Any  # Any: PIL.Image.Image


@dataclass(frozen=True)
class Prediction:
    """One image's prediction: the label, its index, every class's probability, and how far
    to trust it (:mod:`cnnlab.inference.ood`): ``confidence`` (the max probability),
    ``energy`` (``-logsumexp`` of the logits; lower is more like the training data) and
    ``ood`` (confidence below the threshold chosen on validation data; None when the model
    has none)."""

    label: str
    index: int
    probabilities: dict[str, float]
    confidence: float = math.nan
    energy: float = math.nan
    ood: bool | None = None

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
        # what computes the logits: PyTorch until an engine is chosen (cnnlab.load(engine=))
        self.runner: Engine = TorchEngine(self.classifier, self.device)
        # the ood flag's threshold, from the checkpoint or the ood.json beside it
        self.ood_threshold = read_ood_threshold(path, self.metrics)

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
        return F.softmax(self._images_logits(images), dim=1)

    def _images_logits(self, images: Iterable[ImageLike] | torch.Tensor) -> torch.Tensor:
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
        return self.logits(batch)

    def logits(self, batch: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """Float32 logits (N, num_classes) of a uint8 batch already in input form, from the
        engine this model runs on (:attr:`runner`): what predict, evaluate and the service
        all compute."""
        return self.runner.logits(batch, batch_size=batch_size)

    @property
    def engine(self) -> str:
        """What runs predictions: ``torch``, ``onnx`` (ONNX Runtime, FP32) or ``int8`` (ONNX
        Runtime on the INT8 quantisation)."""
        return self.runner.name

    def predict(self, images: Iterable[ImageLike] | torch.Tensor) -> list[Prediction]:
        """Predictions for a batch of images (files, bytes, PIL images, arrays or a tensor)."""
        logits = self._images_logits(images)
        probs = F.softmax(logits, dim=1)
        confidence, energy = confidence_energy(logits.numpy())
        rule = self.ood_threshold
        out = []
        for row, conf, e in zip(probs.tolist(), confidence.tolist(), energy.tolist(),
                                strict=True):
            idx = int(np.argmax(row))
            out.append(Prediction(self.classes[idx], idx,
                                  {c: float(p) for c, p in zip(self.classes, row, strict=True)},
                                  conf, e, None if rule is None else rule.flag(conf)))
        return out

    def ood_answer(self, probabilities: Sequence[float]) -> dict[str, Any]:
        """``confidence`` and ``ood`` for one image's class probabilities (what the service
        has of a prediction; ``energy`` needs the logits)."""
        conf = float(max(probabilities))
        rule = self.ood_threshold
        return {"confidence": conf, "ood": None if rule is None else rule.flag(conf)}


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> Model:
    """Load a checkpoint file, or a run directory's ``model.pt``, as a :class:`Model`.

    The model runs on PyTorch; :func:`cnnlab.load` also picks an ONNX Runtime engine.

    Raises:
        CheckpointError: missing, corrupt or incompatible checkpoint.
    """
    from cnnlab.inference.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    name, kwargs = ckpt["model"]["name"], dict(ckpt["model"]["kwargs"])
    try:
        classifier = create_model(name, **kwargs)
        classifier.input_spec = InputSpec.from_dict(ckpt["input_spec"])
        classifier.load_state_dict(ckpt["state_dict"])
    except (ConfigError, RuntimeError, KeyError, TypeError) as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        # torch's state_dict message opens with "Error(s) in loading ...:"; the cause follows
        first = next((ln for ln in lines if not ln.endswith(":")), lines[0] if lines
                     else type(e).__name__)
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
    return model


