"""PyTorch's own static INT8 (FX graph mode, x86 engine): close to float, and a bench engine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import cnnlab.deploy.torch_int8 as torch_int8
from cnnlab.api import load
from cnnlab.deploy.bench import ENGINES, bench_model
from cnnlab.deploy.torch_int8 import Int8Classifier, normalise_images, quantize_torch
from cnnlab.errors import ExportError, ShapeError
from synth import learnable_images


def _quantized_modules(module: nn.Module) -> list[str]:
    """Qualified names of the INT8 modules in ``module`` (torch.ao.nn[.intrinsic].quantized)."""
    return [f"{type(m).__module__.split('.modules')[0]}.{type(m).__name__}"
            for m in module.modules() if ".quantized" in type(m).__module__]


def test_quantize_torch_stays_close_to_float(run_dir: Path) -> None:
    model = load(run_dir)
    spec = model.input_spec
    calib, _ = learnable_images(16, 3, size=16, seed=0)  # uint8: normalised inside
    q = quantize_torch(model.classifier, calib)
    assert isinstance(q, Int8Classifier) and q.input_spec == spec
    assert {"torch.ao.nn.intrinsic.quantized.ConvReLU2d",  # conv + BN + ReLU, fused
            "torch.ao.nn.quantized.Linear"} <= set(_quantized_modules(q))
    assert not _quantized_modules(model.classifier)  # the float model is left as it was

    images, _ = learnable_images(16, 3, size=16, seed=3)  # not the calibration images
    x = normalise_images(images, spec.mean, spec.std)
    with torch.inference_mode():
        ref, got = model.classifier(x), q(x)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    agreement = (ref.argmax(1) == got.argmax(1)).float().mean().item()
    assert agreement >= 0.95
    spread = (ref.max() - ref.min()).item()
    assert (ref - got).abs().max().item() <= 0.1 * spread
    with pytest.raises(ShapeError, match="input channel"):
        q(torch.zeros(1, 3, 16, 16))  # the float model's shape check still runs


class _Branchy(nn.Module):
    """Control flow on a tensor's value: FX symbolic tracing cannot follow it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y if y.sum() > 0 else -y


def test_quantize_torch_untraceable_and_bad_input() -> None:
    with pytest.raises(ExportError, match="_Branchy cannot be FX-traced"):
        quantize_torch(_Branchy(), torch.randn(4, 1, 8, 8))
    with pytest.raises(ExportError, match="calibration images"):
        quantize_torch(_Branchy(), torch.randn(0, 1, 8, 8))
    with pytest.raises(ExportError, match="input_spec"):
        quantize_torch(_Branchy(), torch.zeros(4, 1, 8, 8, dtype=torch.uint8))


def test_bench_torch_int8_row(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ENGINES.index("torch-int8") == ENGINES.index("torchscript") + 1
    r = bench_model(run_dir, engines=("eager", "torch-int8"), rounds=1, latency_runs=4,
                    progress=False)
    rows = {row["engine"]: row for row in r["rows"]}
    assert list(rows) == ["eager", "torch-int8"]
    int8 = rows["torch-int8"]
    assert int8["latency_ms_p50"] > 0 and int8["throughput_1000"] > 0
    assert 0 < int8["file_bytes"] < rows["eager"]["file_bytes"]
    assert abs(int8["accuracy"] - rows["eager"]["accuracy"]) <= 0.1

    def fail(model: nn.Module, images: torch.Tensor) -> nn.Module:
        raise ExportError("ConvNet cannot be FX-traced for PyTorch INT8 quantisation (...)")

    monkeypatch.setattr(torch_int8, "quantize_torch", fail)
    r = bench_model(run_dir, engines=("eager", "torch-int8"), rounds=1, latency_runs=2,
                    progress=False)
    failed = r["rows"][1]
    assert failed["engine"] == "torch-int8" and "latency_ms_p50" not in failed
    assert failed["note"].startswith("ExportError: ConvNet cannot be FX-traced")
    assert r["fastest_batch_1"] == "eager"
