"""Prediction engines: PyTorch, ONNX Runtime from the cache, and the measured auto choice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import cnnlab
from cnnlab.deploy.engine import (
    cache_dir,
    checkpoint_sha256,
    int8_gate,
    pick_engine,
    usable_int8,
)
from cnnlab.deploy.onnx import load_onnx
from cnnlab.deploy.quantize import quantize_model
from cnnlab.errors import ConfigError


def test_engines_predict_the_same(run_dir: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_ENGINE_CACHE", str(tmp_path / "engines"))
    images = torch.randint(0, 256, (5, 1, 16, 16), dtype=torch.uint8)
    torch_model = cnnlab.load(run_dir)
    onnx_model = cnnlab.load(run_dir, engine="onnx")
    assert torch_model.engine == "torch" and onnx_model.engine == "onnx"
    a, b = torch_model.predict_proba(images), onnx_model.predict_proba(images)
    assert torch.allclose(a, b, atol=1e-5)
    assert list(cache_dir().glob("*.onnx"))  # exported once, into the cache
    auto = cnnlab.load(run_dir, engine="auto")
    records = list(cache_dir().glob("*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert auto.engine == record["engine"] and set(record["batch1_ms"]) == {"torch", "onnx"}
    assert record["int8"] is None  # auto never quantises by itself
    assert pick_engine(auto, "auto") == record["engine"]  # remembered, not measured again
    with pytest.raises(ConfigError, match="engine must be one of"):
        cnnlab.load(run_dir, engine="tensorrt")


def test_int8_engine_quantises_once_and_joins_auto(run_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNLAB_ENGINE_CACHE", str(tmp_path / "engines"))
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    int8 = cnnlab.load(run, engine="int8")  # quantised now, from the run's training data
    assert int8.engine == "int8"
    (made,) = cache_dir().glob("*.int8.onnx")
    assert usable_int8(run / "model.pt") == made
    record = int8.runner.model.metadata["quantization"]  # the ONNX Runtime engine's file
    assert record["checkpoint_sha256"] == checkpoint_sha256(run / "model.pt")
    assert int8_gate(record) is None and record["checked_on"]
    files = sorted((run_dir.parent / "data" / "test").rglob("*.png"))
    reference = [p.label for p in cnnlab.load(run).predict(files)]
    agree = sum(p.label == r for p, r in zip(int8.predict(files), reference, strict=True))
    assert agree >= 0.9 * len(files)
    # auto measures the usable INT8 file along with PyTorch and FP32 ONNX Runtime
    auto = cnnlab.load(run, engine="auto")
    (chosen,) = cache_dir().glob("*.json")
    measured = json.loads(chosen.read_text())
    assert set(measured["batch1_ms"]) == {"torch", "onnx", "int8"}
    assert auto.engine == measured["engine"] and measured["int8"] == str(made)


def test_int8_files_are_used_only_for_their_checkpoint_and_within_the_gate(
        run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    monkeypatch.setenv("CNNLAB_ENGINE_CACHE", str(tmp_path / "engines"))
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    beside = run / "model.int8.onnx"
    quantize_model(run, beside, calibration=16)
    assert usable_int8(run / "model.pt") == beside  # found next to the checkpoint

    def rewrite(**changes: object) -> None:
        proto = onnx.load(str(beside))
        entry = next(p for p in proto.metadata_props if p.key == "cnnlab")
        meta = json.loads(entry.value)
        meta["quantization"].update(changes)
        entry.value = json.dumps(meta)
        onnx.save(proto, str(beside))

    rewrite(accuracy_change_points=-0.5)  # lost half a point: refused
    assert usable_int8(run / "model.pt") is None
    rewrite(accuracy_change_points=0.0, checkpoint_sha256="0" * 64)  # another checkpoint's
    assert usable_int8(run / "model.pt") is None
    beside.write_bytes(b"not onnx")
    assert usable_int8(run / "model.pt") is None
    assert cnnlab.load(run, engine="auto").engine in ("torch", "onnx")


@pytest.mark.parametrize(("record", "why"), [
    ({"accuracy_change_points": -0.11, "top1_agreement": 1.0}, "lost 0.11 points"),
    ({"accuracy_change_points": -0.1}, None),
    ({"accuracy_change_points": 0.2}, None),
    ({"top1_agreement": 0.995}, None),
    ({"top1_agreement": 0.98}, "agreed with FP32 on only 98.00 %"),
    ({}, "no parity check"),
])
def test_int8_gate(record: dict, why: str | None) -> None:
    got = int8_gate(record)
    assert got is None if why is None else why in got  # type: ignore[operator]


def test_packaged_default_model_ships_a_usable_int8_file() -> None:
    from cnnlab.training.checkpoint import default_model_path

    path = default_model_path()
    found = usable_int8(path)
    assert found == path.with_name("model.int8.onnx")
    record = load_onnx(found).metadata["quantization"]
    assert record["accuracy_change_points"] >= -0.1 and record["checked_on"].startswith("mnist")


def test_int8_engine_without_training_data_says_how_to_get_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnlab.config import resolve_config
    from cnnlab.errors import ExportError
    from cnnlab.training.loop import fit
    from synth import write_image_folder

    monkeypatch.setenv("CNNLAB_ENGINE_CACHE", str(tmp_path / "engines"))
    write_image_folder(tmp_path / "data" / "train", n_per_class=8, num_classes=2, size=16)
    cfg = resolve_config({"model": {"name": "convnet", "width": 4},
                          "data": {"dataset": str(tmp_path / "data"), "image_size": 16,
                                   "val_fraction": 0.0},
                          "train": {"epochs": 1, "batch_size": 8, "threads": 1}})
    fit(cfg, out_dir=tmp_path / "run", progress=False)
    shutil.rmtree(tmp_path / "data")  # the run moved to a machine without its data
    with pytest.raises(ExportError, match="cannot make the INT8 engine") as info:
        cnnlab.load(tmp_path / "run", engine="int8")
    assert "model.int8.onnx" in str(info.value) and "set engine='onnx'" in str(info.value)
    assert not list(cache_dir().glob("*.int8.onnx"))  # nothing half-made left behind


def test_auto_falls_back_to_pytorch_when_the_export_fails(
        run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import cnnlab.deploy.onnx as onnx_module
    from cnnlab.errors import ExportError

    def refuse(*args: object, **kwargs: object) -> None:
        raise ExportError("cannot export ConvNet to ONNX (opset 17): an unsupported operator")

    monkeypatch.setenv("CNNLAB_ENGINE_CACHE", str(tmp_path / "engines"))
    monkeypatch.setattr(onnx_module, "export_model", refuse)
    model = cnnlab.load(run_dir, engine="auto")
    assert model.engine == "torch" and model.predict_proba(
        torch.zeros(1, 1, 16, 16, dtype=torch.uint8)).shape == (1, 3)
    assert "using PyTorch, as ONNX Runtime cannot run" in caplog.text
    (record,) = cache_dir().glob("*.json")
    assert "unsupported operator" in json.loads(record.read_text())["onnx_error"]
    assert cnnlab.load(run_dir, engine="auto").engine == "torch"  # remembered
    with pytest.raises(ExportError, match="unsupported operator"):
        cnnlab.load(run_dir, engine="onnx")  # asked for by name: the error stands


def test_auto_on_the_default_model_needs_no_data_and_writes_nothing_here(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The packaged model carries its own check images (model.samples.npz): with no MNIST
    files anywhere and downloads forbidden, the ONNX export is still parity-checked, on those
    images, and nothing is written relative to the working directory."""
    from cnnlab.deploy.onnx import check_images

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")
    monkeypatch.delenv("CNNLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("CNNLAB_ENGINE_CACHE", str(tmp_path / "cache"))
    images, targets, what = check_images(cnnlab.load("default"), None)
    assert len(images) == 513 and "513 MNIST training images" in what
    assert sorted(torch.bincount(targets).tolist())[0] >= 45  # stratified over the classes
    model = cnnlab.load("default", engine="onnx")
    assert model.engine == "onnx" and len(model.predict(images[:4])) == 4
    assert list(work.iterdir()) == []  # nothing written here
    assert list((tmp_path / "cache").glob("*.onnx"))  # the export went to the cache


def test_no_check_images_is_an_error_not_random_images(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    from cnnlab.deploy.onnx import check_images
    from cnnlab.errors import ExportError

    moved = tmp_path / "run"
    shutil.copytree(run_dir, moved)
    ckpt = torch.load(moved / "model.pt", weights_only=True)
    ckpt["config"]["data"]["dataset"] = str(tmp_path / "gone")
    torch.save(ckpt, moved / "model.pt")
    (moved / "splits.json").unlink()
    with pytest.raises(ExportError, match=r"no images to check .* set data_dir"):
        check_images(cnnlab.load(moved), None)
