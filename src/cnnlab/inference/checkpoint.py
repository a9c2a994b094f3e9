"""Checkpoint files: one ``torch.save`` file, loadable with ``weights_only=True``.

A checkpoint holds everything needed to rebuild and use the model without the code that
trained it: the model name and kwargs, the ``state_dict``, class names, the input spec and
preprocessing, the resolved config, metrics and library versions. ``last.pt`` also carries
``train_state`` (optimizer, scheduler, EMA, history) for ``--resume``. Writes are atomic.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import warnings
from pathlib import Path
from typing import Any

import torch

from cnnlab._io import atomic_write_bytes
from cnnlab.errors import CheckpointError

__all__ = [
    "DEFAULT_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "REQUIRED_KEYS",
    "checkpoint_path",
    "checkpoint_sha256",
    "default_model_path",
    "library_versions",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT = "cnnlab-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "model", "state_dict", "classes", "input_spec",
                 "preprocessing", "config", "metrics", "versions")


def library_versions() -> dict[str, str]:
    import numpy

    from cnnlab._version import __version__

    return {"cnnlab": __version__, "torch": str(torch.__version__), "numpy": str(numpy.__version__),
            "python": platform.python_version()}


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (see :data:`REQUIRED_KEYS`) atomically to ``path``."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION,
               "versions": library_versions(), **payload}
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    assert not missing, f"checkpoint payload lacks {missing}"  # internal invariant
    return atomic_write_bytes(path, lambda f: torch.save(payload, f))


DEFAULT_NAME = "default"


def default_model_path() -> Path:
    """The packaged default MNIST model (``cnnlab/assets/default/model.pt``)."""
    from importlib.resources import files

    return Path(str(files("cnnlab") / "assets" / "default" / "model.pt"))


def checkpoint_path(path: str | Path) -> Path:
    """The file a checkpoint argument names: a .pt file, a run directory's model.pt, or, for
    the word ``default`` (when no file or directory of that name exists here), the packaged
    default model."""
    p = Path(path)
    if str(path) == DEFAULT_NAME and not p.exists():
        return default_model_path()
    return p / "model.pt" if p.is_dir() else p


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: the file is missing, unreadable, not a cnnlab checkpoint, of a newer
            format, or lacks a key (the message names the file and the key).
    """
    p = checkpoint_path(path)
    if not p.is_file():
        raise CheckpointError(
            f"checkpoint {str(p)!r} does not exist; pass a .pt file written by `cnnlab train`, "
            "a run directory that contains model.pt, or `default` for the packaged MNIST model"
        )
    _refuse_foreign_file(p)
    try:
        with warnings.catch_warnings():
            # garbage that starts like a pickle of another protocol makes torch warn before it
            # fails; the error below says what is wrong, in one line
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or foreign files
        # its first line only: the rest is torch's advice to load with weights_only=False,
        # which would run whatever code the file holds
        first = (str(e).strip().splitlines() or [""])[0].split(". In PyTorch")[0]
        raise CheckpointError(
            f"checkpoint {str(p)!r} cannot be read ({type(e).__name__}"
            f"{': ' + first if first else ''}); it is corrupt, truncated or not a PyTorch "
            "file: pass a model.pt written by cnnlab, or retrain"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(p)!r} is a PyTorch file but not a cnnlab checkpoint (no 'format': {FORMAT!r} "
            "entry); a bare state_dict can be loaded with create_model(...).load_state_dict()"
        )
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(p)!r} has format version {version!r}; this cnnlab reads versions "
            f"up to {FORMAT_VERSION}. Upgrade cnnlab to load it."
        )
    for key in REQUIRED_KEYS:
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {str(p)!r} lacks the required key {key!r}")
    model = ckpt["model"]
    if not isinstance(model, dict) or "name" not in model or "kwargs" not in model:
        raise CheckpointError(
            f"checkpoint {str(p)!r}: key 'model' must hold 'name' and 'kwargs'; found {model!r}"
        )
    _check_classes(p, ckpt)
    ckpt["path"] = str(p)
    return ckpt


def _refuse_foreign_file(p: Path) -> None:
    """An empty file, or an ONNX file, named as a checkpoint: say what it is.

    Raises:
        CheckpointError: ``p`` is empty or an ONNX model.
    """
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {str(p)!r} is empty (0 bytes), perhaps from an "
                              "interrupted copy; copy it again, or pass another model.pt")
    if p.suffix.lower() == ".onnx":
        raise CheckpointError(
            f"{str(p)!r} is an ONNX file, not a cnnlab checkpoint: an ONNX model keeps no "
            "class names or preprocessing. Pass the checkpoint it was exported from (its run "
            "directory or model.pt) with engine='onnx' to run it on ONNX Runtime")


def _check_classes(p: Path, ckpt: dict[str, Any]) -> None:
    """The class names are distinct strings, as many as the model has outputs.

    Raises:
        CheckpointError: they are not (a hand-edited or foreign file).
    """
    classes = ckpt["classes"]
    if not isinstance(classes, list) or not classes or \
            not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
        raise CheckpointError(
            f"checkpoint {str(p)!r}: 'classes' must be a list of distinct class names; found "
            f"{classes!r:.200}. The file is inconsistent: retrain the model")
    outputs = ckpt["model"]["kwargs"].get("num_classes") if isinstance(
        ckpt["model"]["kwargs"], dict) else None
    if isinstance(outputs, int) and outputs != len(classes):
        raise CheckpointError(
            f"checkpoint {str(p)!r} names {len(classes)} classes ({', '.join(classes[:5])}"
            f"{', ...' if len(classes) > 5 else ''}) but its model has {outputs} outputs; the "
            "file is inconsistent: retrain the model, or restore the original file")


def checkpoint_sha256(checkpoint: str | Path) -> str:
    """The SHA-256 of a checkpoint file, computed once per version of the file (a load with
    ``auto`` asks for it several times: cache keys, the INT8 file's provenance)."""
    path = Path(checkpoint).resolve()
    st = path.stat()
    return _sha256(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _sha256(path: Path, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
