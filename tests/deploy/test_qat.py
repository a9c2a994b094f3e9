"""Quantisation-aware training: the simulation, the fine-tuning, and ``quantize --method qat``."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import cnnlab
from cnnlab.data import load_image_folder
from cnnlab.data.transforms import normalize
from cnnlab.deploy.onnx import load_onnx
from cnnlab.deploy.qat import FakeQuantizer, default_qat_lr, fake_quantized, qat_finetune
from cnnlab.deploy.quantize import quantize_model
from cnnlab.errors import ConfigError, ExportError


@pytest.fixture(scope="module")
def train(run_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    ds = load_image_folder(run_dir.parent / "data" / "train", channels=1, size=(16, 16),
                           progress=False)
    return ds.images, ds.targets


def _plain(module: nn.Module) -> bool:
    """No hooks and no parametrisations left anywhere in ``module``."""
    return not any(m._forward_hooks or m._forward_pre_hooks or hasattr(m, "parametrizations")
                   for m in module.modules())


def test_plan_follows_what_onnx_runtime_quantises(run_dir: Path) -> None:
    # convnet: conv -> bn -> relu; the conv output is folded into the bn, the bn output into
    # the relu, so only the relus and the logits are quantised tensors (plus the input)
    model = cnnlab.load(run_dir)
    fq = FakeQuantizer(copy.deepcopy(model.classifier), torch.zeros(1, 1, 16, 16))
    assert fq.points == ["features.0.act", "features.1.act", "features.2.act", "fc"]
    # resnet: the residual branch and the shortcut meet in an addition, so their batch-norm
    # outputs are quantised tensors; the average pool has a range of its own
    resnet = cnnlab.load("default")
    fq = FakeQuantizer(copy.deepcopy(resnet.classifier), torch.zeros(1, 1, 28, 28))
    assert {"stages.1.1.bn2", "stages.1.1.shortcut.bn", "stages.1.1.act2", "pool",
            "fc"} <= set(fq.points)
    assert not any(p.endswith(("conv", "conv1", "conv2", "bn1")) for p in fq.points)


def test_fake_quantized_forward_is_close_to_float_and_removed_after(
        run_dir: Path, train: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = cnnlab.load(run_dir)
    spec = model.input_spec
    net = copy.deepcopy(model.classifier).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = normalize(train[0], spec.mean, spec.std)
    with torch.no_grad():
        ref = net(x)
    with fake_quantized(net, x[:32]) as fq, torch.no_grad():
        assert fq.mode == "eval"
        got = net(x)
        conv = net.features[0].conv
        w = conv.parametrizations.weight.original
        scale = w.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
        # per-channel symmetric int8: the weight in use is an integer multiple of its scale
        assert torch.allclose(conv.weight, (w / scale).round().clamp(-127, 127) * scale)
        assert not torch.equal(conv.weight, w)
    assert not torch.equal(got, ref)  # rounding happened ...
    err = (got - ref).abs().max() / ref.abs().max()
    assert err < 0.15  # ... but only rounding
    assert (got.argmax(1) == ref.argmax(1)).float().mean() >= 0.9
    # the simulation is gone and the module is as before
    assert _plain(net) and type(net) is type(model.classifier)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with torch.no_grad():
        assert torch.equal(net(x), ref)


def test_fake_quantized_rounds_weights_to_the_reduced_range(
        run_dir: Path, train: tuple[torch.Tensor, torch.Tensor]) -> None:
    """``weight_qmax=64``: what a reduced-range (7-bit) INT8 file holds."""
    model = cnnlab.load(run_dir)
    net = copy.deepcopy(model.classifier).eval()
    x = normalize(train[0], model.input_spec.mean, model.input_spec.std)
    with fake_quantized(net, x[:32], weight_qmax=64), torch.no_grad():
        conv = net.features[0].conv
        w = conv.parametrizations.weight.original
        scale = w.abs().amax(dim=(1, 2, 3), keepdim=True) / 64
        assert torch.allclose(conv.weight, (w / scale).round().clamp(-64, 64) * scale)
        levels = (conv.weight / scale).round().abs().amax(dim=(1, 2, 3))
        assert torch.equal(levels, torch.full_like(levels, 64))


def test_qat_finetune_returns_the_plain_model_with_new_weights(
        run_dir: Path, train: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = cnnlab.load(run_dir)
    original = {k: v.clone() for k, v in model.classifier.state_dict().items()}
    tuned = qat_finetune(model, *train, epochs=2, lr=1e-3, batch_size=16, seed=0)
    assert type(tuned) is type(model.classifier) and _plain(tuned) and not tuned.training
    state = tuned.state_dict()
    assert list(state) == list(original)
    assert not torch.equal(state["features.0.conv.weight"], original["features.0.conv.weight"])
    assert not torch.equal(state["fc.weight"], original["fc.weight"])
    # batch norm statistics are frozen; the source model is untouched
    assert torch.equal(state["features.0.bn.running_mean"],
                       original["features.0.bn.running_mean"])
    assert all(torch.equal(original[k], v) for k, v in model.classifier.state_dict().items())
    # the same seed gives the same weights; the result still classifies the training data
    again = qat_finetune(model, *train, epochs=2, lr=1e-3, batch_size=16, seed=0)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in state.items())
    spec = model.input_spec
    with torch.no_grad():
        acc = (tuned(normalize(train[0], spec.mean, spec.std)).argmax(1) == train[1])
    assert acc.float().mean() >= 0.9


def test_qat_finetune_errors_and_default_lr(run_dir: Path,
                                            train: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = cnnlab.load(run_dir)
    with pytest.raises(ConfigError, match="epochs >= 1; got 0"):
        qat_finetune(model, *train, epochs=0)
    with pytest.raises(ConfigError, match="needs training images"):
        qat_finetune(model, train[0][:0], train[1][:0])
    with pytest.raises(ConfigError, match="learning rate must be > 0"):
        qat_finetune(model, *train, lr=0.0)
    assert default_qat_lr({"optim": {"lr": 0.01}}) == pytest.approx(1e-3)
    assert default_qat_lr({}) == 1e-4


def test_quantize_qat_report_and_file(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "qat.onnx"
    r = quantize_model(run_dir, out, method="qat", calibration=30, qat_epochs=1)
    # the training split only: 72 images less the 15 held out for validation
    assert r["method"] == "qat" and r["qat_epochs"] == 1 and r["qat_images"] == 57
    assert r["calibration_images"] == 30 and r["qat_lr"] == pytest.approx(1e-3)
    # validation decides (the gate), the test split is reported
    assert r["qat_time_s"] > 0 and r["checked_on"].endswith("val split")
    for key in ("accuracy_fp32", "accuracy_int8", "accuracy_change_points",
                "accuracy_qat_fp32", "top1_agreement", "size_ratio", "latency_speedup"):
        assert key in r
    assert r["int8_bytes"] < r["fp32_bytes"] and r["top1_agreement"] >= 0.9
    # compared with the original model's FP32 export
    model = cnnlab.load(run_dir)
    test = load_image_folder(run_dir.parent / "data" / "test", channels=1, size=(16, 16),
                             progress=False)
    with torch.no_grad():
        logits = model.classifier(normalize(test.images, model.input_spec.mean,
                                            model.input_spec.std))
    assert r["test_accuracy_fp32"] == pytest.approx(
        (logits.argmax(1) == test.targets).float().mean().item(), abs=1e-6)
    int8 = load_onnx(out)
    q = int8.metadata["quantization"]
    assert q["method"] == "qat" and q["qat_epochs"] == 1 and q["qat_images"] == 57
    assert int8.metadata["source"] == r["source"]
    assert int8.predict_logits(torch.zeros(2, 1, 16, 16, dtype=torch.uint8)).shape == (2, 3)


def test_quantize_qat_errors(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError,
                       match="The 'qat_epochs' setting of quantize_model must be >= 1"):
        quantize_model(run_dir, tmp_path / "q.onnx", method="qat", qat_epochs=0)
    with pytest.raises(ConfigError, match="qat_images must be >= 1"):
        quantize_model(run_dir, tmp_path / "q.onnx", method="qat", qat_images=0)
    moved = tmp_path / "run"
    shutil.copytree(run_dir, moved)
    ckpt = torch.load(moved / "model.pt", weights_only=True)
    ckpt["config"]["data"]["dataset"] = str(tmp_path / "gone")
    torch.save(ckpt, moved / "model.pt")
    (moved / "splits.json").unlink()  # the split manifest would still find the files
    with pytest.raises(ExportError, match=r"quantisation-aware training .* needs the images "
                                          r"from the model's training data.*set data_dir"):
        quantize_model(moved, tmp_path / "q.onnx", method="qat")
    assert not (tmp_path / "q.onnx").exists()
