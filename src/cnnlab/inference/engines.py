"""What computes a model's logits: the :class:`Engine` protocol, with PyTorch
(:class:`TorchEngine`) and ONNX Runtime (:class:`OnnxEngine`, FP32 or INT8) behind it.

Callers ask the engine; they never branch on which one it is. Choosing and building an
ONNX Runtime engine (export, quantisation, the ``auto`` timing) is :mod:`cnnlab.deploy.engine`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from cnnlab.inference.batched import predict_logits
from cnnlab.inference.ort import OnnxModel
from cnnlab.models.base import Classifier

__all__ = ["Engine", "OnnxEngine", "TorchEngine"]


class Engine(Protocol):
    """Logits for uint8 batches already in the model's input form ``(N, C, H, W)``."""

    name: str  # torch | onnx | int8

    def logits(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Float32 logits as a CPU tensor."""
        ...

    def logits_uint8(self, pixels: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Float32 logits as an array, for a numpy batch (a service's batches)."""
        ...


class TorchEngine:
    """The classifier itself, in eval mode, normalised as it was trained."""

    name = "torch"

    def __init__(self, classifier: Classifier, device: torch.device | str = "cpu") -> None:
        self.classifier = classifier
        self.device = torch.device(device)

    def logits(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        spec = self.classifier.input_spec
        return predict_logits(self.classifier, images, spec.mean, spec.std,
                              batch_size=batch_size, device=self.device).float().cpu()

    def logits_uint8(self, pixels: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        return self.logits(torch.from_numpy(np.ascontiguousarray(pixels)),
                           batch_size=batch_size).numpy()


class OnnxEngine:
    """An ONNX file run by ONNX Runtime: the FP32 export (``onnx``) or its INT8 quantisation
    (``int8``)."""

    def __init__(self, model: OnnxModel, name: str) -> None:
        self.model = model
        self.name = name

    def logits(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        return self.model.predict_logits(images, batch_size=batch_size).float()

    def logits_uint8(self, pixels: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        return self.model.logits_uint8(pixels, batch_size=batch_size)
