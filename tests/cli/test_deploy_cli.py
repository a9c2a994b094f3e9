"""``cnnlab export`` and ``cnnlab quantize`` in-process."""

import json

import pytest

from cli_helpers import error_line as _error_line
from cnnlab.cli.main import main
from synth import write_image_folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    write_image_folder(root / "data" / "train", n_per_class=16, num_classes=2, size=16)
    write_image_folder(root / "data" / "test", n_per_class=4, num_classes=2, size=16, seed=1)
    out = root / "run"
    assert main(["train", "--dataset", str(root / "data"), "--model", "convnet", "--set",
                 "data.image_size=16", "--epochs", "2", "--batch-size", "16", "--device",
                 "cpu", "--out", str(out), "--no-report", "-q"]) == 0
    return out


def test_export_and_quantize(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--out", str(tmp_path / "m.onnx"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    # checked on the validation split (1/12 of 32 training images, one per class), never on
    # the test split, which only reports
    assert r["top1_agreement"] == 1.0 and r["images"] == 2
    assert r["checked_on"].endswith("val split")
    assert main(["export", str(run_dir), "--format", "torchscript", "--out",
                 str(tmp_path / "m.ts")]) == 0
    assert "top-1 agreement 100.00%" in capsys.readouterr().out
    assert main(["quantize", str(run_dir), "--calibration", "16", "--out",
                 str(tmp_path / "q.onnx"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "INT8 static, 7-bit weights" in out and "smaller" in out and "batch-1 p50" in out
    assert "PyTorch INT8 (x86), for comparison: accuracy" in out
    assert main(["quantize", str(run_dir), "--method", "dynamic", "--full-range", "--out",
                 str(tmp_path / "q8.onnx"), "-q"]) == 0
    assert "INT8 dynamic, 8-bit weights" in capsys.readouterr().out


def test_errors(run_dir, tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "nope" in _error_line(capsys)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    assert main(["quantize", str(bad), "--out", str(tmp_path / "q.onnx")]) == 2
    assert "bad.pt" in _error_line(capsys)


def test_quantize_qat(run_dir, tmp_path, capsys):
    assert main(["quantize", str(run_dir), "--method", "qat", "--epochs", "1", "--calibration",
                 "16", "--out", str(tmp_path / "q.onnx"), "-q"]) == 0
    out = capsys.readouterr().out
    # the training split: 32 images less the 2 held out for validation
    assert "quantisation-aware training: 1 epoch(s) on 30 training images" in out
    assert "INT8 qat" in out and "accuracy" in out and "smaller" in out
    assert main(["quantize", str(run_dir), "--method", "qat", "--epochs", "0", "--out",
                 str(tmp_path / "q0.onnx")]) == 2
    assert "--epochs must be >= 1 for --method qat" in _error_line(capsys)
    assert main(["quantize", str(run_dir), "--epochs", "2", "--out",
                 str(tmp_path / "q0.onnx")]) == 2
    assert "--epochs applies to --method qat only" in _error_line(capsys)
    assert not (tmp_path / "q0.onnx").exists()
