"""INT8 quantisation through ONNX Runtime, with a parity report.

``static``: weights and activations in INT8 (QDQ format, per-channel weights), activation
ranges calibrated on ``calibration`` images of the model's training split. ``dynamic``: INT8
weights, activations quantised on the fly (no calibration data; ONNX Runtime applies it to
matrix multiplications and convolutions). ``qat``: quantisation-aware training, for when
``static`` loses accuracy: the model is fine-tuned for ``qat_epochs`` on ``qat_images`` training
images with INT8 rounding simulated (:mod:`cnnlab.deploy.qat`), then quantised like ``static``.
Each result is compared with the (original) model's FP32 export on validation images (the
accuracy gate of the ``int8`` engine decides there; see
:func:`cnnlab.deploy.onnx.check_images`): accuracy change, top-1 agreement, file size, batch-1
latency and batch-1000 throughput, measured alternately in the same run. The test split's
accuracy is reported after, never used to decide.

Weights use ONNX Runtime's reduced range by default (``reduce_range``: 7-bit levels in
[-64, 64]): on x86 CPUs without VNNI (AVX2-only ones), ONNX Runtime's U8S8 kernels sum pairs
of uint8 x int8 products in int16 (``vpmaddubsw``), which saturates when both factors are near
full range and so gives different answers there than on CPUs with VNNI. With 7-bit weights a
pair sums to at most 2 x 255 x 64 = 32,640 and never saturates, so one file gives the same
answers on every CPU. On the packaged default model, on an AVX2-only AMD EPYC: full range
99.57 % on the MNIST test split (-0.10 points on the gate's images, which fails the int8
engine's gate), reduced range 99.65 % (0.00), the same as full range on a CPU with VNNI.
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

from cnnlab.deploy.onnx import (
    OnnxModel,
    _write_atomic,
    compact_names,
    export_model,
    load_onnx,
    parity,
)
from cnnlab.errors import ConfigError, ExportError, invalid_value
from cnnlab.inference.checkpoint import checkpoint_sha256

__all__ = ["METHODS", "quantize_model", "time_onnx"]

METHODS = ("static", "dynamic", "qat")


def _training_split(model: Any, data_dir: str | None, method: str) -> Any:
    """The model's training split (an ImageDataset), or for static calibration the check
    samples stored beside the checkpoint; ExportError when neither can be loaded."""
    from cnnlab.data import ImageDataset
    from cnnlab.training.data import load_split

    try:
        return load_split(model, "train", data_dir=data_dir, allow_download=False)[0]
    except Exception as e:
        if method == "static":
            from cnnlab.deploy.onnx import _stored_samples

            stored = _stored_samples(model)
            if stored is not None:
                return ImageDataset(stored[0], stored[1], list(model.classes), "samples")
        what = ("static quantisation needs calibration images" if method == "static" else
                "quantisation-aware training (method='qat') needs the images")
        raise ExportError(
            f"{what} from the model's training data, and those could not be loaded ({e}); "
            "set data_dir, or set method='dynamic', which needs none") from e


def _stratified(targets: torch.Tensor, n: int) -> torch.Tensor:
    """The indices of a class-stratified subset of about ``n`` of ``targets`` (all when
    ``n`` covers them)."""
    from cnnlab.data import stratified_split

    if n >= len(targets):
        return torch.arange(len(targets))
    keep, _ = stratified_split(targets, 1 - n / len(targets), 0)
    return torch.as_tensor(keep)


def _calibration_images(model: Any, data_dir: str | None, n: int) -> torch.Tensor:
    ds = _training_split(model, data_dir, "static")
    return ds.images[_stratified(ds.targets, n)]


def _save_finetuned(source: str | Path, weights: torch.nn.Module, path: Path,
                    extra: dict[str, Any]) -> Path:
    """``source``'s checkpoint with ``weights``' state_dict, written to ``path`` by the
    checkpoint writer, so that :func:`export_model` and :func:`cnnlab.load` read it."""
    from cnnlab.inference.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(source)
    payload = {k: v for k, v in ckpt.items()
               if k not in ("path", "format", "format_version", "versions")}
    payload["state_dict"] = {k: v.detach().cpu().clone()
                             for k, v in weights.state_dict().items()}
    payload["metrics"] = {**dict(ckpt["metrics"]), **extra}
    return save_checkpoint(path, payload)


def time_onnx(models: dict[str, OnnxModel], shape: tuple[int, ...], *, runs: int = 1000,
              batch: int = 1000, rounds: int = 10) -> dict[str, dict[str, float]]:
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
                   per_channel: bool = True, reduce_range: bool = True, qat_epochs: int = 1,
                   qat_images: int = 60_000,
                   qat_lr: float | None = None, progress: bool = False,
                   compare_pytorch: bool = True) -> dict[str, Any]:
    """Quantise a checkpoint to an INT8 ONNX file and report how it compares with FP32.

    ``method="qat"`` first fine-tunes the model for ``qat_epochs`` on a class-stratified
    ``qat_images`` of its training images with simulated INT8 rounding (``qat_lr``: see
    :func:`cnnlab.deploy.qat.qat_finetune`; ``progress`` shows a bar), then quantises the
    fine-tuned model like ``static``; the report compares it with the original model's FP32
    export and adds ``qat_epochs``, ``qat_images``, ``qat_lr``, ``qat_time_s`` and the
    fine-tuned FP32 model's ``accuracy_qat_fp32``.

    ``reduce_range`` (default on) quantises weights to 7 bits, which ONNX Runtime computes
    exactly on every CPU (see the module's docstring); off, 8 bits, exact only on CPUs with
    VNNI (and on ARM). QAT simulates whichever is chosen.

    ``static`` also quantises the model with PyTorch's own x86 INT8 on the same calibration
    images (``compare_pytorch``) and reports it as ``pytorch_int8``: accuracy, top-1
    agreement, size, batch-1 latency and batch-1000 throughput (timed after the ONNX Runtime
    files), and whether it is faster than ONNX Runtime INT8 at batch 1 and 1000 (on the
    MNIST models here it wins at batch 1000 and loses at batch 1).

    Raises:
        ConfigError: unknown method, calibration size, QAT epochs or images. ExportError: no
        training data (static, qat), or quantisation fails.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    from cnnlab.deploy.onnx import check_images, test_images
    from cnnlab.inference.model import load_model

    if method not in METHODS:
        raise ConfigError(invalid_value("method", method, f"one of {', '.join(METHODS)}",
                                        kind="setting of quantize_model"))
    if not isinstance(reduce_range, bool):
        raise ConfigError(invalid_value("reduce_range", reduce_range, "True or False",
                                        kind="setting of quantize_model"))
    if calibration < 1:
        raise ConfigError(invalid_value("calibration", calibration, ">= 1 (images)",
                                        kind="setting of quantize_model"))
    if method == "qat":
        if isinstance(qat_epochs, bool) or not isinstance(qat_epochs, int) or qat_epochs < 1:
            raise ConfigError(invalid_value("qat_epochs", qat_epochs, ">= 1 (the passes of "
                                            "quantisation-aware training)",
                                            kind="setting of quantize_model"))
        if isinstance(qat_images, bool) or not isinstance(qat_images, int) or qat_images < 1:
            raise ConfigError(f"qat_images must be >= 1 training images; got {qat_images!r}")
    model = load_model(source)
    out = Path(out)
    spec = model.input_spec
    calib: torch.Tensor | None = None
    qat: dict[str, Any] = {}
    if method == "static":
        calib = _calibration_images(model, data_dir, calibration)
    elif method == "qat":
        ds = _training_split(model, data_dir, method)
        keep = _stratified(ds.targets, qat_images)
        train_images, train_targets = ds.images[keep], ds.targets[keep]
        del ds
        calib = train_images[_stratified(train_targets, calibration)]
    # the gate decides on validation images; the test split is only reported, below
    images, targets, what = check_images(model, data_dir, 0)
    with tempfile.TemporaryDirectory(prefix="cnnlab-quant-") as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        export_model(source, fp32_path, fmt="onnx", data_dir=data_dir, limit=1000,
                     check=(images[:1000], targets[:1000], what))
        fp32 = load_onnx(fp32_path)
        to_quantize = fp32_path
        if method == "qat":
            from cnnlab.deploy.qat import default_qat_lr, qat_finetune

            lr = default_qat_lr(model.config) if qat_lr is None else qat_lr
            t0 = time.perf_counter()
            tuned = qat_finetune(model, train_images, train_targets, epochs=qat_epochs, lr=lr,
                                 calibration=calibration, progress=progress,
                                 weight_qmax=64 if reduce_range else 127)
            qat = {"qat_epochs": qat_epochs, "qat_images": len(train_images), "qat_lr": lr,
                   "qat_time_s": round(time.perf_counter() - t0, 2)}
            ckpt = _save_finetuned(source, tuned, Path(tmp) / "qat.pt", {"qat": qat})
            to_quantize = Path(tmp) / "qat-fp32.onnx"
            export_model(ckpt, to_quantize, fmt="onnx", data_dir=data_dir, limit=1000,
                         check=(images[:1000], targets[:1000], what))

        class Reader(CalibrationDataReader):
            def __init__(self, images: torch.Tensor) -> None:
                self.batches = iter(range(0, len(images), 64))
                self.images = images

            def get_next(self) -> dict[str, np.ndarray] | None:
                i = next(self.batches, None)
                if i is None:
                    return None
                x = self.images[i:i + 64].numpy().astype(np.float32) / 255.0
                return {fp32.input_name: (x - fp32.mean) / fp32.std}

        ref = fp32.predict_logits(images)
        sha = checkpoint_sha256(model.path) if model.path else None
        checked: dict[str, Any] = {}

        # ONNX Runtime's recommended pre-processing: shape inference and graph optimisation
        # (folding batch norm into the convolutions) before quantisation
        pre_path = Path(tmp) / "pre.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(to_quantize), str(pre_path), skip_symbolic_shape=True)

        def write(path: Path) -> None:
            quiet = logging.getLogger()
            level = quiet.level
            quiet.setLevel(logging.ERROR)  # ORT's quantiser logs advice on the root logger
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if calib is not None:  # static and qat
                        # unsigned activations with signed weights (U8S8): the combination
                        # ONNX Runtime's x86 kernels fuse into QLinearConv; signed activations
                        # left most convolutions in float behind per-run dequantisation and
                        # made the default resnet 2.7x slower than U8S8 at batch 1
                        quantize_static(str(pre_path), str(path), Reader(calib),
                                        quant_format=QuantFormat.QDQ,
                                        activation_type=QuantType.QUInt8,
                                        weight_type=QuantType.QInt8, per_channel=per_channel,
                                        reduce_range=reduce_range)
                    else:
                        quantize_dynamic(str(pre_path), str(path),
                                         weight_type=QuantType.QInt8, per_channel=per_channel,
                                         reduce_range=reduce_range)
            except Exception as e:
                raise ExportError(f"ONNX Runtime could not quantise {model.path} ({method}): "
                                  f"{e}") from e
            finally:
                quiet.setLevel(level)
            import onnx

            proto = compact_names(onnx.load(str(path)))
            meta = {**fp32.metadata, "quantization": {"method": method, "calibration": (
                len(calib) if calib is not None else 0), "per_channel": per_channel,
                "reduce_range": reduce_range, **{
                    k: v for k, v in qat.items() if k != "qat_time_s"}}}
            entry = next(p for p in proto.metadata_props if p.key == "cnnlab")
            entry.value = json.dumps(meta)
            onnx.save(proto, str(path))
            # the parity check goes into the file too: the int8 engine uses an INT8 file only
            # for the checkpoint it was made from, and only if it kept the accuracy
            checked["got"] = got = load_onnx(path).predict_logits(images)
            from cnnlab.inference.batched import evaluate_loss_accuracy

            record = {"checkpoint_sha256": sha, "checked_on": what,
                      "top1_agreement": parity(ref, got)["top1_agreement"],
                      "accuracy_change_points": round(100 * (
                          evaluate_loss_accuracy(got, targets)[1]
                          - evaluate_loss_accuracy(ref, targets)[1]), 3)}
            meta["quantization"].update(record)
            entry.value = json.dumps(meta)
            onnx.save(proto, str(path))

        _write_atomic(out, write)
        int8 = load_onnx(out)
        got = checked["got"]
        tuned_logits = (load_onnx(to_quantize).predict_logits(images)
                        if method == "qat" else None)
        test = test_images(model, data_dir)
        test_acc = None
        if test is not None:  # reported, after the gate has decided on validation images
            from cnnlab.inference.batched import evaluate_loss_accuracy

            test_acc = {k: round(evaluate_loss_accuracy(m.predict_logits(test[0]), test[1])[1], 6)
                        for k, m in (("fp32", fp32), ("int8", int8))}
        timing = time_onnx({"fp32": fp32, "int8": int8}, spec.shape)
        pytorch: dict[str, Any] | None = None
        if method == "static" and compare_pytorch and calib is not None:
            pytorch, run = _pytorch_int8(model, calib, images, ref, targets)
            if run is not None:
                # timed after, not between, the ONNX Runtime runs: PyTorch's worker threads
                # spin for a while after each call and would slow whatever runs next
                timing.update(time_onnx({"pytorch_int8": run}, spec.shape))
        fp32_bytes = fp32_path.stat().st_size
    check = parity(ref, got)
    report: dict[str, Any] = {
        "source": model.path, "out": str(out), "method": method, "reduce_range": reduce_range,
        "calibration_images": len(calib) if calib is not None else 0, **qat,
        "checked_on": what, "top1_agreement": check["top1_agreement"],
        "fp32_bytes": fp32_bytes, "int8_bytes": out.stat().st_size,
        "size_ratio": round(fp32_bytes / out.stat().st_size, 2), "timing": timing,
        "latency_speedup": round(timing["fp32"]["latency_ms_p50"]
                                 / timing["int8"]["latency_ms_p50"], 2),
        "throughput_speedup": round(timing["int8"]["throughput_images_per_s"]
                                    / timing["fp32"]["throughput_images_per_s"], 2),
    }
    from cnnlab.inference.batched import evaluate_loss_accuracy

    a32 = evaluate_loss_accuracy(ref, targets)[1]
    a8 = evaluate_loss_accuracy(got, targets)[1]
    report.update(accuracy_fp32=round(a32, 6), accuracy_int8=round(a8, 6),
                  accuracy_change_points=round(100 * (a8 - a32), 3))
    if tuned_logits is not None:
        report["accuracy_qat_fp32"] = round(evaluate_loss_accuracy(tuned_logits, targets)[1], 6)
    if test_acc is not None:
        report.update(test_accuracy_fp32=test_acc["fp32"], test_accuracy_int8=test_acc["int8"],
                      test_accuracy_change_points=round(
                          100 * (test_acc["int8"] - test_acc["fp32"]), 3))
    if pytorch is not None:
        if "pytorch_int8" in timing:
            row = timing.pop("pytorch_int8")
            pytorch.update(row)
            pytorch["faster_than_ort_int8"] = {
                "batch1": row["latency_ms_p50"] < timing["int8"]["latency_ms_p50"],
                "batch1000": (row["throughput_images_per_s"]
                              > timing["int8"]["throughput_images_per_s"])}
        report["pytorch_int8"] = pytorch
    return report


def _pytorch_int8(model: Any, calib: torch.Tensor, images: torch.Tensor, ref: torch.Tensor,
                  targets: torch.Tensor | None) -> tuple[dict[str, Any], Any]:
    """PyTorch's own static INT8 (x86) of ``model`` on the same calibration images, for the
    report: its accuracy, agreement with FP32 and size, and a callable on normalised numpy
    input for the timing; a row with the error (and no callable) when PyTorch cannot
    quantise the model."""
    import io

    from cnnlab.deploy.torch_int8 import normalise_images, quantize_torch

    try:
        q = quantize_torch(model.classifier, calib)
    except ExportError as e:
        return {"error": str(e)}, None
    spec = model.input_spec
    with torch.inference_mode():
        logits = torch.cat([q(normalise_images(images[i:i + 1000], spec.mean, spec.std))
                            for i in range(0, len(images), 1000)])
    buf = io.BytesIO()  # what it ships: the quantised state_dict
    torch.save(q.state_dict(), buf)
    row: dict[str, Any] = {"top1_agreement": parity(ref, logits)["top1_agreement"],
                           "bytes": buf.getbuffer().nbytes}
    if targets is not None:
        from cnnlab.inference.batched import evaluate_loss_accuracy

        row["accuracy"] = round(evaluate_loss_accuracy(logits, targets)[1], 6)

    def run(x: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            return q(torch.from_numpy(x))

    return row, run
