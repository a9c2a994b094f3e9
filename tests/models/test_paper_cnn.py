"""The paper's Table II CNN."""

from __future__ import annotations

import pytest
import torch

from cnnlab.errors import ConfigError
from cnnlab.models import create_model
from cnnlab.models.summary import summarize


def test_table_ii_at_224x224x3() -> None:
    """Shapes and parameter counts of Table II (Dense(128) corrected, see paper_cnn.py)."""
    model = create_model("paper-cnn", in_channels=3, input_size=224)
    summary = summarize(model)
    rows = [(r.type, r.output_shape, r.params) for r in summary.layers if r.type != "ReLU"]
    assert rows == [
        ("Conv2d", (32, 224, 224), 896),
        ("MaxPool2d", (32, 112, 112), 0),
        ("Conv2d", (64, 112, 112), 18_496),
        ("MaxPool2d", (64, 56, 56), 0),
        ("Flatten", (200_704,), 0),
        ("Linear", (128,), 25_690_240),  # the paper prints 25,689,600
        ("Dropout", (128,), 0),
        ("Linear", (10,), 1_290),
    ]
    assert summary.total_params == 25_710_922
    assert model.num_features == 200_704


def test_mnist_cnn_at_28x28() -> None:
    model = create_model("paper-cnn")
    assert sum(p.numel() for p in model.parameters()) == 421_642
    assert model.num_features == 64 * 7 * 7
    assert model.fixed_size


@pytest.mark.parametrize("kernel_size", [3, 5, 7])
def test_kernel_size_keeps_the_shapes(kernel_size: int) -> None:
    model = create_model("paper-cnn", kernel_size=kernel_size)
    assert model.features.conv1.kernel_size == (kernel_size, kernel_size)
    assert model.num_features == 3136
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("kernel_size", [4, 0, 3.0, True])
def test_bad_kernel_size(kernel_size: object) -> None:
    with pytest.raises(ConfigError, match=r"'kernel_size' parameter of model 'paper-cnn' must be "
                                          r"an odd int >= 1"):
        create_model("paper-cnn", kernel_size=kernel_size)


def test_filters_set_the_number_of_conv_blocks() -> None:
    model = create_model("paper-cnn", filters=(16, 32, 64), hidden=64, dropout=0.5)
    assert model.num_features == 64 * 3 * 3
    assert model.drop.p == 0.5
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_odd_input_size_derives_the_flatten_size() -> None:
    model = create_model("paper-cnn-tiny", input_size=(30, 45))
    assert model.num_features == 16 * 7 * 11
    assert model(torch.randn(2, 1, 30, 45)).shape == (2, 10)


def test_input_too_small_for_the_pools() -> None:
    with pytest.raises(ConfigError, match=r"halves the image 2 time\(s\).*at least 4x4; got 3x3"):
        create_model("paper-cnn", input_size=3)
    with pytest.raises(ConfigError, match=r"'filters' parameter .* Got \(\) instead"):
        create_model("paper-cnn", filters=())
