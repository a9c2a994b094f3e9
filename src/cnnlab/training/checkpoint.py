"""Checkpoint files, as training writes them: the format lives in
:mod:`cnnlab.inference.checkpoint` (loading a model needs it, and inference sits below
training); these names are the same objects."""

from cnnlab._io import atomic_write_bytes
from cnnlab.inference.checkpoint import (
    DEFAULT_NAME,
    FORMAT,
    FORMAT_VERSION,
    REQUIRED_KEYS,
    checkpoint_path,
    checkpoint_sha256,
    default_model_path,
    library_versions,
    load_checkpoint,
    save_checkpoint,
)

__all__ = ["DEFAULT_NAME", "FORMAT", "FORMAT_VERSION", "REQUIRED_KEYS", "atomic_write_bytes",
           "checkpoint_path", "checkpoint_sha256", "default_model_path", "library_versions",
           "load_checkpoint", "save_checkpoint"]
