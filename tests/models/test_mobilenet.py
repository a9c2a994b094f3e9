"""MobileNet / EfficientNet-style: depthwise convs, inverted residuals, SE, bad settings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models import create_model
from cnnlab.models.mobilenet import InvertedResidual, SqueezeExcite


def _blocks(model: nn.Module) -> list[InvertedResidual]:
    return [m for m in model.modules() if isinstance(m, InvertedResidual)]


def test_mobilenet_blocks() -> None:
    model = create_model("mobilenet")
    blocks = _blocks(model)
    assert len(blocks) == 7
    first = blocks[0].layers
    assert not hasattr(first, "expand")  # the first stage: a depthwise-separable conv
    assert first.depthwise.conv.groups == first.depthwise.conv.in_channels == 16
    assert hasattr(blocks[1].layers, "expand") and blocks[1].layers.expand.conv.out_channels == 64
    assert [b.residual for b in blocks] == [True, False, True, False, True, False, True]
    assert not any(isinstance(m, SqueezeExcite) for m in model.modules())
    assert isinstance(first.depthwise.act, nn.ReLU6)
    assert not hasattr(first.project, "act")  # the linear bottleneck


def test_efficientnet_has_se_silu_and_a_5x5_stage() -> None:
    model = create_model("efficientnet")
    se = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert len(se) == 7 and isinstance(se[0].act, nn.SiLU)
    assert model.features.stage3[0].layers.depthwise.conv.kernel_size == (5, 5)


def test_squeeze_excite_gates_channels() -> None:
    se = SqueezeExcite(4, 2, nn.ReLU).eval()
    x = torch.rand(1, 4, 3, 3)
    gate = se(x) / x
    assert ((gate > 0) & (gate < 1)).all()
    assert torch.allclose(gate, gate[:, :, :1, :1].expand_as(gate))  # one gate per channel


def test_width_mult_and_kernel_size() -> None:
    model = create_model("mobilenet", width_mult=0.5, kernel_size=5, head_width=0)
    assert model.num_features == 40
    assert all(b.layers.depthwise.conv.kernel_size == (5, 5) for b in _blocks(model))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strides": (1, 3, 2, 1)}, r"'strides' parameter .* 1s and 2s"),
        ({"blocks": (1, 2)}, r"one entry per stage .*'blocks': 2"),
        ({"expansion": 0.5}, r"'expansion' parameter .* \[1, 16\]"),
        ({"se_ratio": -0.1}, r"'se_ratio' parameter .* \[0, 1\]"),
        ({"activation": "gelu"}, r"'activation' parameter .* 'relu6', 'hardswish', 'silu'"),
        ({"kernel_size": 4}, r"'kernel_size' parameter .* odd int"),
        ({"width_mult": 0}, r"'width_mult' parameter .* \(0, 16\]"),
        ({"head_width": -1}, r"'head_width' parameter .* int >= 0"),
    ],
)
def test_invalid_settings_are_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("mobilenet", **kwargs)


def test_any_input_size() -> None:
    model = create_model("efficientnet-tiny").eval()
    for size in (1, 2, 5, 31):
        assert model(torch.randn(1, 1, size, size)).shape == (1, 10)
