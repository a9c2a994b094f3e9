"""ONNX and TorchScript export with parity checks, ONNX Runtime loading, INT8 quantisation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import cnnlab
from cnnlab.deploy.engine import INT8_MAX_DROP_POINTS, int8_gate
from cnnlab.deploy.onnx import export_model, load_onnx
from cnnlab.deploy.quantize import quantize_model
from cnnlab.errors import CheckpointError, ConfigError, ExportError


def test_onnx_export_matches_pytorch_on_validation_images(run_dir: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    r = export_model(run_dir, out)
    # the validation split (20 % of 72 training images), never the test split, which reports
    assert r["checked_on"].endswith("val split") and r["images"] == 15
    assert r["max_abs_diff"] <= 1e-4 and r["top1_agreement"] == 1.0
    assert r["accuracy_exported"] == r["accuracy_pytorch"] and r["opset"] == 17
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version == 17
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["cnnlab"])
    model = cnnlab.load(run_dir)
    assert meta["classes"] == model.classes and meta["input_spec"] == model.input_spec.to_dict()
    # one file, any batch size
    onnx_model = load_onnx(out)
    for n in (1, 7):
        x = np.random.default_rng(n).standard_normal((n, 1, 16, 16)).astype(np.float32)
        with torch.no_grad():
            ref = model.classifier(torch.from_numpy(x)).numpy()
        assert np.abs(onnx_model(x) - ref).max() <= 1e-4
    assert not list(tmp_path.glob("*.partial"))


def test_torchscript_export(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.ts"
    r = export_model(run_dir, out, fmt="torchscript")
    assert r["max_abs_diff"] <= 1e-4 and r["top1_agreement"] == 1.0
    extra = {"cnnlab.json": ""}
    with pytest.warns(DeprecationWarning, match="torch.jit.load"):  # TorchScript is deprecated
        torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["cnnlab.json"])["classes"] == cnnlab.load(run_dir).classes


def test_export_errors(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="The 'fmt' setting of export_model must be one of "
                                          "onnx, torchscript"):
        export_model(run_dir, tmp_path / "m.x", fmt="tflite")
    # a parity failure removes the file and says by how much
    with pytest.raises(ExportError, match=r"does not match PyTorch .*the file was removed"):
        export_model(run_dir, tmp_path / "m.onnx", tolerance=-1.0)
    assert not (tmp_path / "m.onnx").exists()
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage")
    with pytest.raises(CheckpointError, match="not a loadable ONNX model"):
        load_onnx(corrupt)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_onnx(tmp_path / "missing.onnx")
    # an ONNX file from elsewhere has no cnnlab metadata
    good = tmp_path / "good.onnx"
    export_model(run_dir, good)
    proto = onnx.load(str(good))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "foreign.onnx"))
    with pytest.raises(CheckpointError, match="no cnnlab metadata"):
        load_onnx(tmp_path / "foreign.onnx")


@pytest.mark.parametrize("method", ["static", "dynamic"])
def test_quantize(run_dir: Path, tmp_path: Path, method: str) -> None:
    out = tmp_path / f"{method}.onnx"
    r = quantize_model(run_dir, out, method=method, calibration=30)
    assert r["calibration_images"] == (30 if method == "static" else 0)
    assert r["int8_bytes"] < r["fp32_bytes"] and r["size_ratio"] > 1.5
    # the gate the int8 engine applies: at most INT8_MAX_DROP_POINTS of accuracy lost (on the
    # fixture's few dozen check images one more mistake costs over 4 points: none may be lost),
    # on a model that learned the task
    assert r["accuracy_fp32"] >= 0.9
    assert r["accuracy_change_points"] >= -INT8_MAX_DROP_POINTS
    assert r["top1_agreement"] >= 0.9
    assert set(r["timing"]) == {"fp32", "int8"}
    meta = load_onnx(out).metadata
    assert meta["quantization"]["method"] == method
    # the file records the same check, so the engine would take it for the checkpoint
    assert meta["quantization"]["accuracy_change_points"] == r["accuracy_change_points"]
    assert int8_gate(meta["quantization"]) is None
    if method == "static":  # PyTorch's own INT8, quantised on the same images, for comparison
        row = r["pytorch_int8"]
        assert row["top1_agreement"] >= 0.9 and 0 <= row["accuracy"] <= 1
        assert 0 < row["bytes"] < r["fp32_bytes"]
        assert row["latency_ms_p50"] > 0 and row["throughput_images_per_s"] > 0
        assert set(row["faster_than_ort_int8"]) == {"batch1", "batch1000"}
    else:
        assert "pytorch_int8" not in r


def _weight_levels(path: Path) -> int:
    """The largest |level| among the INT8 weight initialisers of an ONNX file."""
    from onnx import numpy_helper

    return max(int(np.abs(numpy_helper.to_array(t).astype(np.int32)).max())
               for t in onnx.load(str(path)).graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and np.prod(t.dims) > 1)


@pytest.mark.parametrize("method", ["static", "dynamic"])
def test_quantize_reduces_the_weight_range_unless_asked_not_to(
        run_dir: Path, tmp_path: Path, method: str) -> None:
    """7-bit weights by default (no int16 saturation on CPUs without VNNI); 8-bit on request.
    Per-channel symmetric weights reach the end of their range in every channel."""
    reduced, full = tmp_path / "reduced.onnx", tmp_path / "full.onnx"
    r = quantize_model(run_dir, reduced, method=method, calibration=30, compare_pytorch=False)
    assert r["reduce_range"] is True and _weight_levels(reduced) == 64
    assert load_onnx(reduced).metadata["quantization"]["reduce_range"] is True
    r = quantize_model(run_dir, full, method=method, calibration=30, compare_pytorch=False,
                       reduce_range=False)
    assert r["reduce_range"] is False and _weight_levels(full) == 127
    assert load_onnx(full).metadata["quantization"]["reduce_range"] is False
    with pytest.raises(ConfigError, match="The 'reduce_range' setting of quantize_model"):
        quantize_model(run_dir, tmp_path / "q.onnx", reduce_range="yes")  # type: ignore[arg-type]


def test_quantize_errors(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="The 'method' setting of quantize_model must be one "
                                          "of static, dynamic"):
        quantize_model(run_dir, tmp_path / "q.onnx", method="qat8")
    with pytest.raises(ConfigError, match="The 'calibration' setting of quantize_model "
                                          "must be >= 1"):
        quantize_model(run_dir, tmp_path / "q.onnx", calibration=0)
    # the training data is gone: static quantisation has nothing to calibrate on
    moved = tmp_path / "run"
    shutil.copytree(run_dir, moved)
    ckpt = torch.load(moved / "model.pt", weights_only=True)
    ckpt["config"]["data"]["dataset"] = str(tmp_path / "gone")
    torch.save(ckpt, moved / "model.pt")
    (moved / "splits.json").unlink()  # the split manifest would still find the files
    with pytest.raises(ExportError, match="needs calibration images"):
        quantize_model(moved, tmp_path / "q.onnx")
    assert not (tmp_path / "q.onnx").exists()


def test_quantize_reports_when_pytorch_cannot_quantise(run_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import cnnlab.deploy.torch_int8 as torch_int8

    def refuse(model: object, images: object) -> None:
        raise ExportError("ConvNet cannot be FX-traced for PyTorch INT8 quantisation")

    monkeypatch.setattr(torch_int8, "quantize_torch", refuse)
    r = quantize_model(run_dir, tmp_path / "q.onnx", calibration=30)
    assert r["pytorch_int8"] == {
        "error": "ConvNet cannot be FX-traced for PyTorch INT8 quantisation"}
    assert r["top1_agreement"] >= 0.9  # the ONNX Runtime result stands
