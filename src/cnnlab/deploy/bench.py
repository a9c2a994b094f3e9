"""``cnnlab bench``: one model on every inference engine, measured in one run.

Engines: PyTorch eager, eager with channels_last, ``torch.compile``, TorchScript (traced and
frozen), PyTorch's own static INT8 (FX graph mode, x86 engine), ONNX Runtime FP32 and ONNX
Runtime static INT8. For each: batch-1 latency (p50, p95), throughput at batch 256 and 1000,
the memory a batch-1000 call adds to the process (resident set), the file size a deployment
ships, and accuracy on the model's test split. Engines are measured alternately over several
rounds and the medians reported, so a noisy neighbour on a shared machine hits all of them
alike.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import ConfigError

__all__ = ["ENGINES", "bench_model"]

ENGINES = ("eager", "channels_last", "compile", "torchscript", "torch-int8", "ort-fp32",
           "ort-int8")

_CALIBRATION = 512  # training images the INT8 engines calibrate activation ranges on


def _status_mb(field: str) -> float | None:
    """A memory figure of this process from /proc (Linux), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _torch_engine(module: Callable[[torch.Tensor], torch.Tensor], channels_last: bool = False
                  ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``module`` is an ``nn.Module`` or what ``torch.compile`` made of one."""
    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return module(x)

    return run


def _build(name: str, model: Any, source: str | Path, tmp: Path, data_dir: str | None
           ) -> tuple[Callable[[torch.Tensor], torch.Tensor], int | None]:
    """The engine's forward function on normalised input, and the size of what it ships."""
    import copy

    from cnnlab.deploy.onnx import export_onnx, load_onnx

    base = model.classifier.eval()
    ckpt_bytes = Path(model.path).stat().st_size if model.path else None
    example = torch.zeros(1, *model.input_spec.shape)
    if name == "eager":
        return _torch_engine(base), ckpt_bytes
    if name == "channels_last":
        m = copy.deepcopy(base).to(memory_format=torch.channels_last)
        return _torch_engine(m, True), ckpt_bytes
    if name == "compile":
        call = _torch_engine(torch.compile(copy.deepcopy(base)))
        call(example)  # compile now, not inside the timing
        return call, ckpt_bytes
    if name == "torchscript":
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            ts = torch.jit.freeze(torch.jit.trace(copy.deepcopy(base), example))
            path = tmp / "model.ts"
            torch.jit.save(ts, str(path))
        return _torch_engine(ts), path.stat().st_size
    if name == "torch-int8":
        import io

        from cnnlab.deploy.quantize import _calibration_images
        from cnnlab.deploy.torch_int8 import quantize_torch

        calib = _calibration_images(model, data_dir, _CALIBRATION)  # uint8, normalised inside
        q = quantize_torch(base, calib)
        buf = io.BytesIO()  # what it ships: the quantised state_dict (code rebuilds the graph)
        torch.save(q.state_dict(), buf)
        return _torch_engine(q), buf.getbuffer().nbytes
    if name == "ort-fp32":
        path = export_onnx(model, tmp / "fp32.onnx")
    else:
        from cnnlab.deploy.quantize import quantize_model

        path = tmp / "int8.onnx"
        quantize_model(source, path, calibration=_CALIBRATION, data_dir=data_dir,
                       compare_pytorch=False)  # the torch-int8 engine is a row of its own
    onnx_model = load_onnx(path)
    return (lambda x: torch.from_numpy(onnx_model(x.numpy()))), path.stat().st_size


def _peak_memory_mb(source: str, name: str, data_dir: str | None) -> float | None:
    """In a fresh process: the peak resident memory a batch-1000 call adds to a loaded,
    warmed-up engine."""
    from cnnlab.inference.model import load_model

    model = load_model(source)
    with tempfile.TemporaryDirectory(prefix="cnnlab-mem-") as tmp:
        call, _ = _build(name, model, source, Path(tmp), data_dir)
        one = torch.randn(1, *model.input_spec.shape)
        big = torch.randn(1000, *model.input_spec.shape)
        for _ in range(5):
            call(one)
        before = _status_mb("VmRSS")
        call(big)
        peak = _status_mb("VmHWM")
    if before is None or peak is None:
        return None
    return round(max(0.0, peak - before), 1)


def bench_model(source: str | Path, *, engines: tuple[str, ...] = ENGINES, rounds: int = 5,
                latency_runs: int = 200, data_dir: str | None = None,
                measure_memory: bool = False, progress: bool = True) -> dict[str, Any]:
    """Measure ``source`` on ``engines``; returns the table rows and the settings.

    Raises:
        ConfigError: an unknown engine. CheckpointError: an unusable checkpoint.
    """
    from cnnlab.deploy.onnx import check_images
    from cnnlab.inference.batched import evaluate_loss_accuracy
    from cnnlab.inference.model import load_model
    from cnnlab.progress import Progress

    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise ConfigError(f"unknown engine(s) {', '.join(unknown)}; known: {', '.join(ENGINES)}")
    model = load_model(source)
    spec = model.input_spec
    images, targets, what = check_images(model, data_dir, 0)
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    test_x = (images.float() / 255 - mean) / std
    calls: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    sizes: dict[str, int | None] = {}
    notes: dict[str, str] = {}
    tmp = tempfile.TemporaryDirectory(prefix="cnnlab-bench-")
    bar = Progress(len(engines), "preparing engines", "engine", enabled=progress)
    for name in engines:
        try:
            calls[name], sizes[name] = _build(name, model, source, Path(tmp.name), data_dir)
        except Exception as e:  # one engine failing must not hide the others
            notes[name] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
        bar.update(1)
    bar.close()

    one = torch.randn(1, *spec.shape)
    batches = {256: torch.randn(256, *spec.shape), 1000: torch.randn(1000, *spec.shape)}
    lat: dict[str, list[float]] = {n: [] for n in calls}
    thr: dict[str, dict[int, list[float]]] = {n: {256: [], 1000: []} for n in calls}
    for call in calls.values():  # warm-up
        for _ in range(10):
            call(one)
        call(batches[1000])
    memory: dict[str, float | None] = {}
    if measure_memory:  # each engine in a fresh process: peaks do not mix
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ctx.Pool(1, maxtasksperchild=1) as pool:
            for name in calls:
                memory[name] = pool.apply(_peak_memory_mb, (str(source), name, data_dir))
    bar = Progress(rounds * len(calls), "measuring", "engine-round", enabled=progress)
    per_round = max(1, latency_runs // rounds)
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                call(one)
                lat[name].append((time.perf_counter() - t0) * 1000)
            for b, x in batches.items():
                t0 = time.perf_counter()
                call(x)
                thr[name][b].append(b / (time.perf_counter() - t0))
            bar.update(1)
    bar.close()

    rows: list[dict[str, Any]] = []
    for name in engines:
        if name not in calls:
            rows.append({"engine": name, "note": notes.get(name, "")})
            continue
        ts = sorted(lat[name])
        logits = torch.cat([calls[name](test_x[i:i + 1000]).float()
                            for i in range(0, len(test_x), 1000)])
        acc = evaluate_loss_accuracy(logits, targets)[1] if targets is not None else None
        rows.append({
            "engine": name,
            "latency_ms_p50": round(statistics.median(ts), 4),
            "latency_ms_p95": round(ts[min(len(ts) - 1, round(0.95 * (len(ts) - 1)))], 4),
            "throughput_256": round(statistics.median(thr[name][256]), 1),
            "throughput_1000": round(statistics.median(thr[name][1000]), 1),
            "peak_memory_mb": memory.get(name), "file_bytes": sizes.get(name),
            "accuracy": round(acc, 6) if acc is not None else None,
        })
    tmp.cleanup()
    fastest = min((r for r in rows if "latency_ms_p50" in r), key=lambda r: r["latency_ms_p50"],
                  default=None)
    return {"source": model.path, "checked_on": what, "threads": torch.get_num_threads(),
            "rounds": rounds, "latency_runs": per_round * rounds, "rows": rows,
            "fastest_batch_1": fastest["engine"] if fastest else None}
