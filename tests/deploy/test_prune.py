"""Magnitude and channel pruning: sparsity, exact copies, smaller models, fine-tuning that keeps
the zeros, checkpoints that reload, and the errors."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import cnnlab
from cnnlab.config import resolve_config
from cnnlab.deploy.prune import (
    channel_prune,
    magnitude_prune,
    prune_channels,
    prune_checkpoint,
    sparsity,
)
from cnnlab.errors import ConfigError
from cnnlab.models import create_model
from cnnlab.models.summary import summarize
from cnnlab.training.loop import fit
from synth import write_image_folder

CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_image_folder(root / "train", n_per_class=20, num_classes=3, size=16, classes=CLASSES)
    write_image_folder(root / "test", n_per_class=6, num_classes=3, size=16, seed=1,
                       classes=CLASSES)
    return root


@pytest.fixture(scope="module")
def source(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small convnet trained on the folder: the run the tests prune."""
    out = tmp_path_factory.mktemp("src") / "run"
    cfg = resolve_config({"model": {"name": "convnet", "width": 4},
                          "data": {"dataset": str(folder), "image_size": 16,
                                   "val_fraction": 0.2},
                          "optim": {"lr": 0.01}, "train": {"epochs": 3, "batch_size": 16,
                                                           "threads": 1, "device": "cpu"}})
    fit(cfg, out_dir=out, progress=False)
    return out


def _randomise_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


# --- magnitude ---------------------------------------------------------------------------------

@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_reaches_the_amount_and_keeps_the_keys(scope: str) -> None:
    model = create_model("paper-cnn-tiny", input_size=16, num_classes=3)
    keys = set(model.state_dict())
    head = model.fc2.weight.detach().clone()
    stats = magnitude_prune(model, 0.6, scope=scope, include_head=False)
    assert set(model.state_dict()) == keys  # prune.remove: no weight_orig / weight_mask
    assert stats["sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert set(stats["layers"]) == {"features.conv1", "features.conv2", "fc1"}  # head left out
    assert torch.equal(model.fc2.weight, head)
    if scope == "layer":
        for layer in stats["layers"].values():
            assert layer["sparsity"] == pytest.approx(0.6, abs=1 / layer["weights"])
    assert sparsity(model, include_head=False) == {k: v for k, v in stats.items()
                               if k in ("weights", "zeros", "sparsity", "layers")}
    assert sparsity(model)["weights"] == stats["weights"] + head.numel()
    model.eval()(torch.zeros(2, 1, 16, 16))  # still runs
    every = magnitude_prune(create_model("paper-cnn-tiny", input_size=16, num_classes=3), 0.5)
    assert "fc2" in every["layers"] and every["sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_magnitude_finetuning_keeps_the_zeros(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    report = prune_checkpoint(source, method="magnitude", amount=0.7, finetune_epochs=2,
                              out=out, progress=False)
    # the same pruning of the source, done here: the zeros of the fine-tuned model are exactly
    # the ones pruning made, so fine-tuning moved none of them
    reference = cnnlab.load(source).classifier
    pruned_stats = magnitude_prune(reference, 0.7)
    model = cnnlab.load(out)  # an ordinary checkpoint
    assert report["sparsity"] == pruned_stats["sparsity"] == sparsity(model.classifier)["sparsity"]
    assert report["sparsity"] == pytest.approx(0.7, abs=1e-3)
    tuned, ref = model.classifier.state_dict(), reference.state_dict()
    for name in pruned_stats["layers"]:
        key = f"{name}.weight"
        assert torch.equal(tuned[key] == 0, ref[key] == 0), key
    assert any(not torch.equal(tuned[k], ref[k]) for k in ref)  # and it did train
    assert report["params"]["after"] == report["params"]["before"]
    assert report["params"]["nonzero_after"] < report["params"]["nonzero_before"]
    assert report["macs"]["after"] == report["macs"]["before"]
    assert report["eval_split"] == "test" and report["eval_images"] == 18
    for value in report["accuracy"].values():
        assert 0 <= value <= 1
    assert report["metrics"]["epochs_run"] == 2
    assert json.loads((out / "prune.json").read_text()) == json.loads(json.dumps(report))
    preds = model.predict(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))
    assert len(preds) == 2 and all(p.label in CLASSES for p in preds)


@pytest.mark.parametrize("optim", [
    {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.1, "scheduler": "onecycle"},
    {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3},
])
def test_zeros_survive_fit_with_decay_ema_amp_and_channels_last(optim: dict) -> None:
    """The gradient mask keeps the zeros under every optimiser, weight decay, an EMA of the
    weights, bf16 autocast and channels_last (the fast recipe's settings)."""
    from cnnlab.deploy.prune import _keep_zeros, _masks
    from synth import prepared_data

    data = prepared_data(n_per_class=8, num_classes=3, val_per_class=2, test_per_class=2)
    cfg = resolve_config({"model": {"name": "paper-cnn-tiny"}, "optim": optim,
                          "train": {"epochs": 2, "batch_size": 8, "ema": 0.9, "amp": "on",
                                    "channels_last": "on", "device": "cpu", "threads": 1}})
    model = create_model("paper-cnn-tiny", num_classes=3)
    model.input_spec = dataclasses.replace(model.input_spec, mean=data.mean, std=data.std)
    magnitude_prune(model, 0.5)
    masks = _masks(model, include_head=True)
    zeros = {name: m.weight.detach() == 0 for name, m in model.named_modules()
             if isinstance(m, nn.Conv2d | nn.Linear)}
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with _keep_zeros(masks):
        result = fit(cfg, data=data, model=model, progress=False)
    assert all(not p._backward_hooks for p in model.parameters())  # the hooks are gone
    final = dict(result.model.named_modules())
    for name, was_zero in zeros.items():
        assert torch.equal(final[name].weight.detach() == 0, was_zero), name
    assert not torch.equal(result.model.state_dict()["fc1.weight"], start["fc1.weight"])


# --- channel -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "kwargs"), [
    ("convnet", {"width": 4}), ("convnet", {"width": 4, "depth": 6}),
    ("convnet", {"width": 4, "batch_norm": False}), ("paper-cnn-tiny", {}),
    ("convnet", {"width": 4, "pool_first": True}),  # the fast recipe's settings survive
    ("convnet", {"width": 4, "pool_first": True, "crop": 12}),
])
def test_channel_pruning_at_zero_is_an_exact_copy(name: str, kwargs: dict) -> None:
    model = create_model(name, input_size=16, num_classes=3, **kwargs).eval()
    _randomise_bn(model)
    x = torch.randn(4, 1, 16, 16)
    copy = channel_prune(model, 0.0).eval()
    assert torch.equal(copy(x), model(x))
    assert copy.input_spec == model.input_spec
    if name == "convnet":  # every setting but the widths carries over
        assert copy.config == dataclasses.replace(model.config, width=None)


@pytest.mark.parametrize(("name", "kwargs"), [
    ("convnet", {"width": 4}), ("convnet", {"width": 4, "depth": 6}), ("paper-cnn-tiny", {}),
])
def test_channel_pruning_halves_the_channels(name: str, kwargs: dict) -> None:
    model = create_model(name, input_size=16, num_classes=3, **kwargs).eval()
    r = prune_channels(model, 0.5, name=name)
    assert all(after == before // 2 for before, after in r.channels.values()), r.channels
    before, after = summarize(model), summarize(r.model)
    assert after.total_macs < before.total_macs / 2.5 and after.total_params < before.total_params
    # the kwargs rebuild it: what a checkpoint records
    rebuilt = create_model(r.name, input_size=16, num_classes=3, **r.kwargs)
    rebuilt.load_state_dict(r.model.state_dict())
    assert "width" not in r.kwargs
    assert r.model(torch.zeros(1, 1, 16, 16)).shape == (1, 3)
    one = prune_channels(model, 0.99).channels  # at least one channel per layer
    assert all(after == 1 for _, after in one.values())


def test_channel_pruning_removes_the_right_channels() -> None:
    """Channels whose batch norm outputs zero contribute nothing: removing exactly them leaves
    the output unchanged, which checks the kept filters, inputs and flatten-head columns."""
    model = create_model("convnet", width=4, input_size=16, num_classes=3).eval()
    _randomise_bn(model)
    for block in model.features:
        bn = block.bn
        dead = torch.arange(0, bn.num_features, 2)  # every other channel
        bn.weight.data[dead] = 0.0
        bn.bias.data[dead] = 0.0
    x = torch.randn(4, 1, 16, 16)
    pruned = channel_prune(model, 0.5).eval()
    assert [b.conv.out_channels for b in pruned.features] == [2, 4, 8]
    assert torch.allclose(pruned(x), model(x), atol=1e-5)


def test_channel_checkpoint_reloads_smaller(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    report = prune_checkpoint(source, method="channel", amount=0.5, finetune_epochs=1,
                              out=out, progress=False)
    assert report["model"] == {"name": "convnet", "kwargs": {
        "widths": [2, 4, 8], "pools": [True, True, False], "kernel_size": 3, "dropout": 0.0,
        "residual": False, "batch_norm": True, "pool_first": False, "crop": 0}}
    assert report["macs"]["after"] < report["macs"]["before"] / 2.5
    assert report["params"]["after"] < report["params"]["before"] / 2
    assert report["layers"]["features.2.conv"] == {"before": 16, "after": 8}
    assert 0.5 < report["sparsity"] < 1
    model = cnnlab.load(out)
    assert model.config["model"]["widths"] == [2, 4, 8]
    assert summarize(model.classifier).total_macs == report["macs"]["after"]
    assert len(model.predict(torch.zeros(3, 1, 16, 16, dtype=torch.uint8))) == 3
    # pruned again, without fine-tuning: the pruned run is a source like any other
    again = prune_checkpoint(out, method="channel", amount=0.5, finetune_epochs=0,
                             out=tmp_path / "c2", progress=False)
    assert again["model"]["kwargs"]["widths"] == [1, 2, 4]
    assert again["accuracy"]["finetuned"] is None
    assert cnnlab.load(tmp_path / "c2").config["model"]["widths"] == [1, 2, 4]


def test_amount_zero_changes_nothing_before_finetuning(source: Path, folder: Path,
                                                       tmp_path: Path) -> None:
    moved = tmp_path / "moved"  # the source's image folder, elsewhere now
    moved.symlink_to(folder, target_is_directory=True)
    r = prune_checkpoint(source, method="channel", amount=0.0, finetune_epochs=0,
                         out=tmp_path / "z", progress=False, data_dir=str(moved))
    assert cnnlab.load(tmp_path / "z").config["data"]["dataset"] == str(moved)
    assert r["accuracy"]["pruned"] == r["accuracy"]["source"]
    assert r["macs"]["after"] == r["macs"]["before"] and r["sparsity"] == 0


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("amount", [-0.1, 1.0, 1.5, math.nan, True])
def test_amount_out_of_range(amount: float) -> None:
    model = create_model("convnet", width=4, input_size=16, num_classes=3)
    for prune in (magnitude_prune, channel_prune):
        with pytest.raises(ConfigError, match=r"amount must be a fraction in \[0, 1\)"):
            prune(model, amount)


def test_unsupported_models() -> None:
    lenet = create_model("lenet5", num_classes=3)
    with pytest.raises(ConfigError, match=r"supports the convnet, paper-cnn, paper-cnn-tiny .*"
                                          r"LeNet.* \(method='magnitude'\)"):
        channel_prune(lenet, 0.5)
    assert magnitude_prune(lenet, 0.5)["sparsity"] == pytest.approx(0.5, abs=1e-3)
    residual = create_model("convnet", width=4, residual=True, input_size=16, num_classes=3)
    with pytest.raises(ConfigError, match="cannot shrink a residual convnet"):
        channel_prune(residual, 0.5)
    with pytest.raises(ConfigError, match="scope must be one of global, layer"):
        magnitude_prune(lenet, 0.5, scope="net")


def test_prune_checkpoint_errors(source: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="method must be one of magnitude, channel"):
        prune_checkpoint(source, method="random", amount=0.5, out=tmp_path / "x")
    with pytest.raises(ConfigError, match="finetune_epochs must be an int >= 0"):
        prune_checkpoint(source, amount=0.5, finetune_epochs=-1, out=tmp_path / "x")
    with pytest.raises(ConfigError, match="already holds a run"):
        prune_checkpoint(source, amount=0.5, out=source)
    with pytest.raises(ConfigError, match=r"amount must be a fraction"):
        prune_checkpoint(source, amount=1, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
