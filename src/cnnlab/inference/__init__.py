"""Inference: how an image becomes model input (:class:`Preprocess`, from the spec a
checkpoint records), the loaded :class:`Model` and the :class:`Engine` that computes its
logits, shared by every command that reads images or predicts."""

from cnnlab.inference.engines import Engine, OnnxEngine, TorchEngine
from cnnlab.inference.model import Model, Prediction, load_model
from cnnlab.inference.preprocess import INTERPOLATIONS, KINDS, Preprocess, digit_likeness

__all__ = ["INTERPOLATIONS", "KINDS", "Engine", "Model", "OnnxEngine", "Prediction",
           "Preprocess", "TorchEngine", "digit_likeness", "load_model"]
