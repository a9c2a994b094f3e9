"""Training: the loop, optimizers and schedules, checkpoints."""

from cnnlab.train.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.train.loop import FitResult, fit

__all__ = ["FitResult", "fit", "load_checkpoint", "save_checkpoint"]
