"""Which engine runs a checkpoint at prediction time: PyTorch, or ONNX Runtime.

``onnx`` exports the checkpoint once (with the parity check of ``cnnlab export``) into the
engine cache, ``$CNNLAB_ENGINE_CACHE`` or ``~/.cache/cnnlab/engines``, keyed by the SHA-256 of
the checkpoint file, and runs it with ONNX Runtime from then on. ``auto`` also measures both
engines at batch 1 the first time a checkpoint is loaded and remembers the faster one in the
same cache; on this machine ONNX Runtime was 4-5x faster at batch 1 for the MNIST models
(``cnnlab bench``).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import ConfigError

__all__ = ["ENGINES", "cache_dir", "onnx_engine", "pick_engine"]

ENGINES = ("torch", "onnx", "auto")


def cache_dir() -> Path:
    env = os.environ.get("CNNLAB_ENGINE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cnnlab" / "engines"


def _key(checkpoint: Path) -> str:
    h = hashlib.sha256()
    with checkpoint.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:32]


def onnx_engine(checkpoint: str | Path) -> Any:
    """The checkpoint's ONNX export from the cache (made and parity-checked on first use).

    Raises:
        ExportError: the model cannot be exported, or the export disagrees with PyTorch.
    """
    from cnnlab.deploy.onnx import export_model, load_onnx

    path = Path(checkpoint)
    onnx_path = cache_dir() / f"{_key(path)}.onnx"
    if not onnx_path.is_file():
        export_model(path, onnx_path, limit=1000)
    return load_onnx(onnx_path)


def pick_engine(model: Any, requested: str) -> str:
    """``torch`` or ``onnx`` for ``model`` (a :class:`cnnlab.api.Model` loaded from a file).

    Raises:
        ConfigError: an unknown engine name.
    """
    if requested not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}; got {requested!r}")
    if requested != "auto":
        return requested
    if model.path is None or model.device.type != "cpu":
        return "torch"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    path = Path(model.path)
    record = cache_dir() / f"{_key(path)}.json"
    if record.is_file():
        return json.loads(record.read_text())["engine"]
    onnx_model = onnx_engine(path)
    x = torch.randn(1, *model.input_spec.shape)
    timings = {}
    with torch.inference_mode():
        for name, run in (("torch", lambda: model.classifier(x)),
                          ("onnx", lambda: onnx_model(x.numpy()))):
            for _ in range(5):
                run()
            ts = []
            for _ in range(30):
                t0 = time.perf_counter()
                run()
                ts.append(time.perf_counter() - t0)
            timings[name] = statistics.median(ts) * 1000
    engine = min(timings, key=timings.__getitem__)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"engine": engine, "batch1_ms": timings}) + "\n")
    return engine
