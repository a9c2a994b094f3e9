"""Inference: how an image becomes model input (:class:`Preprocess`, from the spec a
checkpoint records), shared by every command that reads images."""

from cnnlab.inference.preprocess import INTERPOLATIONS, KINDS, Preprocess, digit_likeness

__all__ = ["INTERPOLATIONS", "KINDS", "Preprocess", "digit_likeness"]
