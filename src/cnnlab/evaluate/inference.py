"""Moved to :mod:`cnnlab.inference.batched`; this name stays until its last importers move."""

from cnnlab.inference.batched import autocast_context, evaluate_loss_accuracy, predict_logits

__all__ = ["autocast_context", "evaluate_loss_accuracy", "predict_logits"]
