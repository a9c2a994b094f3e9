"""Which engine runs a checkpoint at prediction time: PyTorch, ONNX Runtime, or ONNX Runtime
on an INT8 quantisation of the model.

``onnx`` exports the checkpoint once (with the parity check of ``cnnlab export``) into the
engine cache, ``$CNNLAB_ENGINE_CACHE`` or ``~/.cache/cnnlab/engines``, keyed by the SHA-256 of
the checkpoint file, and runs it with ONNX Runtime from then on.

``int8`` runs a static INT8 quantisation of the checkpoint: the file next to the checkpoint
(``model.int8.onnx`` beside ``model.pt``, as ``cnnlab quantize`` writes it and as the packaged
default model ships it) or one in the cache, made on first use from the training data. An INT8
file is used only when its metadata names the checkpoint's SHA-256 and records that it kept
the accuracy within ``INT8_MAX_DROP_POINTS`` (0.1 point) of FP32 on validation images (or,
in files made before that record, agreed with FP32 on at least 99 % of the top-1 classes).
The test split never decides.

``auto`` measures the engines available at batch 1 the first time a checkpoint is loaded and
remembers the fastest in the cache: PyTorch and the FP32 export always, the INT8 file when a
usable one exists (``auto`` never quantises by itself). A model that cannot be exported runs
on PyTorch, with a warning that says why. On this machine ONNX Runtime was 4-5x
faster than PyTorch at batch 1 for the MNIST models, and INT8 about 2x faster than FP32 for the
default residual CNN (``cnnlab bench``).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import ConfigError, ExportError
from cnnlab.inference.checkpoint import checkpoint_sha256
from cnnlab.inference.engines import Engine

__all__ = ["ENGINES", "INT8_MAX_DROP_POINTS", "cache_dir", "checkpoint_sha256", "int8_engine",
           "int8_gate", "load_with_engine", "make_engine", "onnx_engine", "pick_engine",
           "usable_int8"]

log = logging.getLogger("cnnlab")

ENGINES = ("torch", "onnx", "int8", "auto")
INT8_MAX_DROP_POINTS = 0.1  # the accuracy an INT8 engine may lose against FP32
INT8_MIN_AGREEMENT = 0.99  # top-1 agreement asked of it where no labels were available


def cache_dir() -> Path:
    env = os.environ.get("CNNLAB_ENGINE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cnnlab" / "engines"


def _key(checkpoint: Path) -> str:
    return checkpoint_sha256(checkpoint)[:32]


def onnx_engine(checkpoint: str | Path, *, spinning: bool = True, threads: int = 0) -> Any:
    """The checkpoint's ONNX export from the cache (made and parity-checked on first use).

    Raises:
        ExportError: the model cannot be exported, or the export disagrees with PyTorch.
    """
    from cnnlab.deploy.onnx import export_model, load_onnx

    path = Path(checkpoint)
    onnx_path = cache_dir() / f"{_key(path)}.onnx"
    if not onnx_path.is_file():
        export_model(path, onnx_path, limit=1000)
    return load_onnx(onnx_path, spinning=spinning, threads=threads)


def int8_gate(quantization: dict[str, Any]) -> str | None:
    """Why an INT8 model with this ``quantization`` record may not stand in for FP32, or
    None when it may."""
    change = quantization.get("accuracy_change_points")
    if change is not None:
        if change < -INT8_MAX_DROP_POINTS:
            return (f"it lost {-change:.2f} points of validation accuracy (at most "
                    f"{INT8_MAX_DROP_POINTS} allowed)")
        return None
    agreement = quantization.get("top1_agreement")
    if agreement is None:
        return "its metadata records no parity check"
    if agreement < INT8_MIN_AGREEMENT:
        return (f"it agreed with FP32 on only {100 * agreement:.2f} % of the top-1 classes "
                f"(at least {100 * INT8_MIN_AGREEMENT:.0f} % asked)")
    return None


def _int8_record(path: Path) -> dict[str, Any] | None:
    """The ``quantization`` record of an INT8 file written by ``cnnlab quantize``."""
    import onnx

    try:
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        record = json.loads(props["cnnlab"]).get("quantization")
    except Exception:  # unreadable or foreign: not usable, and not ours to complain about
        return None
    return record if isinstance(record, dict) else None


def usable_int8(checkpoint: str | Path) -> Path | None:
    """An INT8 file made from ``checkpoint`` that passed the accuracy gate: next to the
    checkpoint (``<stem>.int8.onnx``) or in the engine cache; None when there is none."""
    path = Path(checkpoint)
    sha = checkpoint_sha256(path)
    for candidate in (path.with_name(f"{path.stem}.int8.onnx"),
                      cache_dir() / f"{sha[:32]}.int8.onnx"):
        if candidate.is_file():
            record = _int8_record(candidate)
            if record and record.get("checkpoint_sha256") == sha and int8_gate(record) is None:
                return candidate
    return None


def int8_engine(checkpoint: str | Path, *, data_dir: str | None = None,
                spinning: bool = True, threads: int = 0) -> Any:
    """The checkpoint's INT8 model: a usable file (see :func:`usable_int8`), or one quantised
    into the cache now, with calibration images from the training data.

    Raises:
        ExportError: no calibration data, or the quantised model fails the accuracy gate.
    """
    from cnnlab.deploy.onnx import load_onnx
    from cnnlab.deploy.quantize import quantize_model

    path = Path(checkpoint)
    found = usable_int8(path)
    if found is None:
        target = cache_dir() / f"{_key(path)}.int8.onnx"
        try:
            report = quantize_model(path, target, method="static", data_dir=data_dir,
                                    compare_pytorch=False)
        except ExportError as e:
            from cnnlab.errors import DataError

            cause = e.__cause__
            why = (f"quantising it needs its training data, which could not be loaded "
                   f"({cause})" if isinstance(cause, DataError) else str(e))
            raise ExportError(
                f"cannot make the INT8 engine for {path}: {why}. Quantise it where the data "
                f"is, into {path.with_name(f'{path.stem}.int8.onnx')} (quantize_model, or the "
                "quantize command), or set engine='onnx'"
            ) from e
        refused = int8_gate(report)
        if refused is not None:
            target.unlink(missing_ok=True)
            raise ExportError(
                f"the INT8 quantisation of {path} is not used: {refused}; set engine='onnx', or "
                "quantise it with quantisation-aware training (method='qat')")
        found = target
    return load_onnx(found, spinning=spinning, threads=threads)


def _median_ms(run: Any) -> float:
    for _ in range(5):
        run()
    ts = []
    for _ in range(30):
        t0 = time.perf_counter()
        run()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1000


def pick_engine(model: Any, requested: str) -> str:
    """``torch``, ``onnx`` or ``int8`` for ``model`` (a :class:`cnnlab.inference.Model` loaded from
    a file).

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
    int8_path = usable_int8(path)
    record = cache_dir() / f"{_key(path)}.json"
    if record.is_file():
        try:
            known = json.loads(record.read_text())
        except ValueError:
            known = {}
        # measured with the same INT8 file on hand (or none): the choice still holds
        if known.get("engine") in ENGINES and known.get("int8") == (
                str(int8_path) if int8_path else None):
            return str(known["engine"])
    from cnnlab.deploy.onnx import load_onnx

    x = torch.randn(1, *model.input_spec.shape)
    runs = {"torch": lambda: model.classifier(x)}
    try:
        fp32 = onnx_engine(path)
    except ExportError as e:  # PyTorch is the fallback; say why, and remember it
        log.warning("engine auto: using PyTorch, as ONNX Runtime cannot run %s: %s", path, e)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"engine": "torch", "batch1_ms": {}, "int8": None,
                                      "onnx_error": str(e)}) + "\n")
        return "torch"
    runs["onnx"] = lambda: fp32(x.numpy())
    if int8_path is not None:
        int8 = load_onnx(int8_path)
        runs["int8"] = lambda: int8(x.numpy())
    with torch.inference_mode():
        timings = {name: _median_ms(run) for name, run in runs.items()}
    engine = min(timings, key=timings.__getitem__)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"engine": engine, "batch1_ms": timings,
                                  "int8": str(int8_path) if int8_path else None}) + "\n")
    return engine


def make_engine(model: Any, requested: str, *, spinning: bool = True,
                threads: int = 0) -> Engine:
    """The engine ``requested`` (``torch``, ``onnx``, ``int8`` or ``auto``) for a model loaded
    from a file.

    Raises:
        ConfigError: an unknown engine name. ExportError: the engine cannot run the model.
    """
    from cnnlab.inference.engines import OnnxEngine, TorchEngine

    chosen = pick_engine(model, requested)
    if chosen == "onnx":
        return OnnxEngine(onnx_engine(model.path, spinning=spinning, threads=threads), "onnx")
    if chosen == "int8":
        return OnnxEngine(int8_engine(model.path, spinning=spinning, threads=threads), "int8")
    return TorchEngine(model.classifier, model.device)


def load_with_engine(path: str | Path, *, device: str | torch.device = "cpu",
                     engine: str = "torch", spinning: bool = True, threads: int = 0) -> Any:
    """:func:`cnnlab.inference.load_model` with the engine ``engine`` attached (what
    :func:`cnnlab.load` does).

    Raises:
        CheckpointError, ConfigError, ExportError: see :func:`make_engine`.
    """
    from cnnlab.inference.model import load_model

    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    model = load_model(path, device=device)
    if engine != "torch":
        model.runner = make_engine(model, engine, spinning=spinning, threads=threads)
    return model
