"""The layer table: shapes, parameter counts, hand-computed MACs, formatting and errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cnnlab.errors import ConfigError, ShapeError
from cnnlab.models import create_model
from cnnlab.models.summary import ModelSummary, format_summary, summarize


def test_single_conv_macs_by_hand() -> None:
    conv = nn.Conv2d(3, 8, kernel_size=5, padding=2)  # 3 -> 8 channels, 5x5, keeps 10x12
    summary = summarize(conv, (3, 10, 12))
    (row,) = summary.layers
    assert row.output_shape == (8, 10, 12)
    assert row.macs == 8 * 10 * 12 * 3 * 5 * 5  # output elements x in_channels x kernel area
    assert row.params == 8 * 3 * 25 + 8
    assert summary.total_macs == 72_000


def test_grouped_strided_conv_and_linear_macs() -> None:
    model = nn.Sequential(
        nn.Conv2d(4, 8, kernel_size=3, stride=2, groups=2, bias=False),  # (8, 4, 4) from 9x9
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(128, 5),
    )
    rows = summarize(model, (4, 9, 9)).layers
    assert [r.name for r in rows] == ["0", "1", "2", "3", "4"]
    assert rows[0].macs == 8 * 4 * 4 * (4 // 2) * 9
    assert [r.macs for r in rows[1:4]] == [0, 0, 0]
    assert rows[1].params == 16
    assert rows[4].macs == 128 * 5


def test_shared_module_counts_its_parameters_once() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.fc(x))

    summary = summarize(Twice(), (1, 1, 4))  # any three dims: Linear acts on the last
    assert [r.params for r in summary.layers] == [20, 0]
    assert [r.macs for r in summary.layers] == [16, 16]
    assert summary.total_params == 20


def test_paper_cnn_totals_and_size() -> None:
    summary = summarize(create_model("paper-cnn"))
    assert summary.input_shape == (1, 28, 28)
    assert summary.total_params == summary.trainable_params == 421_642
    assert summary.non_trainable_params == 0
    assert summary.param_bytes == 4 * 421_642
    assert summary.param_mb == pytest.approx(1.686568)
    conv1 = summary.layers[0]
    assert conv1.name == "features.conv1" and conv1.macs == 32 * 28 * 28 * 1 * 3 * 3


def test_frozen_parameters_are_non_trainable() -> None:
    model = create_model("lenet5")
    for p in model.features.parameters():
        p.requires_grad_(False)
    summary = summarize(model)
    assert summary.non_trainable_params == 156 + 2416
    assert summary.trainable_params == 61_706 - 2572


def test_format_summary_is_a_keras_like_table() -> None:
    text = format_summary(summarize(create_model("paper-cnn", in_channels=3, input_size=224)))
    lines = text.splitlines()
    assert lines[0] == 'Model: "PaperCNN"   input (C, H, W): (3, 224, 224)'
    assert lines[2].split() == ["Layer", "(type)", "Output", "Shape", "Param", "#", "MACs"]
    assert any(line.split()[:4] == ["fc1", "(Linear)", "(128,)", "25,690,240"] for line in lines)
    assert "features.pool2 (MaxPool2d)  (64, 56, 56)" in text
    assert "Total params: 25,710,922" in text
    assert "Params size: 102.84 MB (10^6 bytes)" in text
    assert "Total MACs per sample: 300,254,464 (300.25 M)" in text
    assert "(C, H, W)" in lines[-1]


def test_to_dict_is_json_ready() -> None:
    summary = summarize(create_model("resnet-tiny"))
    data = json.loads(json.dumps(summary.to_dict()))
    assert data["total_params"] == summary.total_params
    assert data["layers"][0] == {
        "name": "stem.conv", "type": "Conv2d", "output_shape": [8, 28, 28],
        "params": 72, "trainable_params": 72, "macs": 8 * 28 * 28 * 9,
    }
    assert str(summary) == format_summary(summary)
    assert isinstance(summary, ModelSummary)


def test_mode_is_restored() -> None:
    model = create_model("resnet-tiny").train()
    summarize(model)
    assert model.training
    model.eval()
    summarize(model)
    assert not model.training


@pytest.mark.parametrize("name", ["paper-cnn", "alexnet-tiny"])
def test_rejected_input_raises_shape_error(name: str) -> None:
    model = create_model(name)
    with pytest.raises(ShapeError, match="expects 1 input channel"):
        summarize(model, (3, 28, 28))


def test_fixed_size_model_rejects_other_sizes() -> None:
    with pytest.raises(ShapeError, match="built for 28x28 inputs"):
        summarize(create_model("paper-cnn"), (1, 32, 32))


@pytest.mark.parametrize("shape", [(28, 28), (1, 0, 28), (1, 28.0, 28), "1x28x28"])
def test_bad_input_shape(shape: object) -> None:
    with pytest.raises(ShapeError, match=r"'input_shape' parameter of summarize must be \(C, H"):
        summarize(create_model("lenet5"), shape)  # type: ignore[arg-type]


def test_plain_module_needs_an_input_shape() -> None:
    with pytest.raises(ConfigError, match=r"needs input_shape=.*Conv2d"):
        summarize(nn.Conv2d(1, 1, 3))


def test_model_on_another_device() -> None:
    with pytest.raises(ConfigError, match=r"parameters are on cpu but device='meta'"):
        summarize(create_model("lenet5"), device="meta")
