"""INT8 quantisation through ONNX Runtime, with a parity report.

``static``: weights and activations in INT8 (QDQ format, per-channel weights), activation
ranges calibrated on ``calibration`` images of the model's training split. ``dynamic``: INT8
weights, activations quantised on the fly (no calibration data; ONNX Runtime applies it to
matrix multiplications and convolutions). Each result is compared with the FP32 export on the
test split: accuracy change, top-1 agreement, file size, batch-1 latency and batch-1000
throughput, measured alternately in the same run.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.deploy.onnx import OnnxModel, _write_atomic, export_model, load_onnx, parity
from cnnlab.errors import ConfigError, ExportError

__all__ = ["METHODS", "quantize_model", "time_onnx"]

METHODS = ("static", "dynamic")


def _calibration_images(model: Any, data_dir: str | None, n: int) -> torch.Tensor:
    from cnnlab.data import stratified_split
    from cnnlab.evaluate.report import _load_split

    try:
        ds, _ = _load_split(model, None, data_dir, "train", False)
    except Exception as e:
        raise ExportError(
            f"static quantisation needs calibration images from the model's training data, and "
            f"those could not be loaded ({e}); pass --data-dir, or use --method dynamic, which "
            "needs none") from e
    if n >= len(ds):
        return ds.images
    keep, _ = stratified_split(ds.targets, 1 - n / len(ds), 0)
    return ds.images[torch.as_tensor(keep)]


def time_onnx(models: dict[str, OnnxModel], shape: tuple[int, ...], *, runs: int = 200,
              batch: int = 1000, rounds: int = 5) -> dict[str, dict[str, float]]:
    """Batch-1 latency percentiles and batch-``batch`` throughput per model, interleaved."""
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, *shape)).astype(np.float32)
    big = rng.standard_normal((batch, *shape)).astype(np.float32)
    lat: dict[str, list[float]] = {k: [] for k in models}
    thr: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():
        for _ in range(10):
            m(one)
        m(big)
    for _ in range(rounds):
        for name, m in models.items():
            for _ in range(runs // rounds):
                t0 = time.perf_counter()
                m(one)
                lat[name].append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            m(big)
            thr[name].append(batch / (time.perf_counter() - t0))
    out = {}
    for name in models:
        ts = sorted(lat[name])
        out[name] = {"latency_ms_p50": round(statistics.median(ts), 4),
                     "latency_ms_p95": round(ts[min(len(ts) - 1, round(0.95 * (len(ts) - 1)))],
                                             4),
                     "throughput_images_per_s": round(statistics.median(thr[name]), 1)}
    return out


def quantize_model(source: str | Path, out: str | Path, *, method: str = "static",
                   calibration: int = 512, data_dir: str | None = None,
                   per_channel: bool = True) -> dict[str, Any]:
    """Quantise a checkpoint to an INT8 ONNX file and report how it compares with FP32.

    Raises:
        ConfigError: unknown method or calibration size. ExportError: no calibration data,
        or quantisation fails.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    from cnnlab.api import load
    from cnnlab.deploy.onnx import _check_images

    if method not in METHODS:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}; got {method!r}")
    if calibration < 1:
        raise ConfigError(f"--calibration must be >= 1 images; got {calibration}")
    model = load(source)
    out = Path(out)
    spec = model.input_spec
    calib = _calibration_images(model, data_dir, calibration) if method == "static" else None
    with tempfile.TemporaryDirectory(prefix="cnnlab-quant-") as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        export_model(source, fp32_path, fmt="onnx", data_dir=data_dir, limit=1000)
        fp32 = load_onnx(fp32_path)

        class Reader(CalibrationDataReader):  # type: ignore[misc]
            def __init__(self, images: torch.Tensor) -> None:
                self.batches = iter(range(0, len(images), 64))
                self.images = images

            def get_next(self) -> dict[str, np.ndarray] | None:
                i = next(self.batches, None)
                if i is None:
                    return None
                x = self.images[i:i + 64].numpy().astype(np.float32) / 255.0
                return {fp32.input_name: (x - fp32.mean) / fp32.std}

        # ONNX Runtime's recommended pre-processing: shape inference and graph optimisation
        # (folding batch norm into the convolutions) before quantisation
        pre_path = Path(tmp) / "pre.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32_path), str(pre_path), skip_symbolic_shape=True)

        def write(path: Path) -> None:
            quiet = logging.getLogger()
            level = quiet.level
            quiet.setLevel(logging.ERROR)  # ORT's quantiser logs advice on the root logger
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if method == "static":
                        quantize_static(str(pre_path), str(path), Reader(calib),
                                        quant_format=QuantFormat.QDQ,
                                        activation_type=QuantType.QInt8,
                                        weight_type=QuantType.QInt8, per_channel=per_channel)
                    else:
                        quantize_dynamic(str(pre_path), str(path),
                                         weight_type=QuantType.QInt8, per_channel=per_channel)
            except Exception as e:
                raise ExportError(f"ONNX Runtime could not quantise {model.path} ({method}): "
                                  f"{e}") from e
            finally:
                quiet.setLevel(level)
            import onnx

            proto = onnx.load(str(path))
            meta = {**fp32.metadata, "quantization": {"method": method, "calibration": (
                len(calib) if calib is not None else 0), "per_channel": per_channel}}
            for p in proto.metadata_props:
                if p.key == "cnnlab":
                    p.value = json.dumps(meta)
            onnx.save(proto, str(path))

        _write_atomic(out, write)
        int8 = load_onnx(out)
        images, targets, what = _check_images(model, data_dir, 0)
        ref, got = fp32.predict_logits(images), int8.predict_logits(images)
        timing = time_onnx({"fp32": fp32, "int8": int8}, spec.shape)
        fp32_bytes = fp32_path.stat().st_size
    check = parity(ref, got)
    report: dict[str, Any] = {
        "source": model.path, "out": str(out), "method": method,
        "calibration_images": len(calib) if calib is not None else 0,
        "checked_on": what, "top1_agreement": check["top1_agreement"],
        "fp32_bytes": fp32_bytes, "int8_bytes": out.stat().st_size,
        "size_ratio": round(fp32_bytes / out.stat().st_size, 2), "timing": timing,
        "latency_speedup": round(timing["fp32"]["latency_ms_p50"]
                                 / timing["int8"]["latency_ms_p50"], 2),
        "throughput_speedup": round(timing["int8"]["throughput_images_per_s"]
                                    / timing["fp32"]["throughput_images_per_s"], 2),
    }
    if targets is not None:
        from cnnlab.evaluate.inference import evaluate_loss_accuracy

        a32 = evaluate_loss_accuracy(ref, targets)[1]
        a8 = evaluate_loss_accuracy(got, targets)[1]
        report.update(accuracy_fp32=round(a32, 6), accuracy_int8=round(a8, 6),
                      accuracy_change_points=round(100 * (a8 - a32), 3))
    return report
