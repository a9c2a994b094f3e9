"""Moved to :mod:`cnnlab.training.finetune`; this name stays until its last importers move."""

from cnnlab.training.finetune import *  # noqa: F403
from cnnlab.training.finetune import __all__  # noqa: F401
