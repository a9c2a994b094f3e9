"""LeNet-5."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models import create_model


def test_layout_and_parameters_at_28x28() -> None:
    model = create_model("lenet5")
    assert sum(p.numel() for p in model.parameters()) == 61_706
    assert model.num_features == 16 * 5 * 5
    assert [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)] == [6, 16]
    assert (model.fc1.out_features, model.fc2.out_features, model.fc3.out_features) == (
        120, 84, 10,
    )
    assert isinstance(model.features.act1, nn.Tanh)
    assert isinstance(model.features.pool1, nn.AvgPool2d)


def test_original_32x32_input_without_padding() -> None:
    model = create_model("lenet5", input_size=32, padding=0)
    assert model.num_features == 400
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_modern_variant() -> None:
    model = create_model("lenet5", activation="relu", pool="max")
    assert isinstance(model.act3, nn.ReLU) and isinstance(model.features.pool2, nn.MaxPool2d)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activation": "gelu"}, r"'activation' parameter .* one of \['relu', 'tanh'\]"),
        ({"pool": "min"}, r"'pool' parameter .* one of \['avg', 'max'\]"),
        ({"padding": -1}, r"'padding' parameter .* int >= 0"),
        ({"input_size": 11}, r"needs input_size of at least 12x12; got 11x11"),
    ],
)
def test_invalid_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("lenet5", **kwargs)
