"""Training: the loop, optimizers and schedules, checkpoints."""

from cnnlab.inference.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.training.loop import FitResult, fit

__all__ = ["FitResult", "fit", "load_checkpoint", "save_checkpoint"]
