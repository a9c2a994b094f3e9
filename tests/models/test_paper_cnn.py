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


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_two_blocks_is_table_ii() -> None:
    """``blocks=2`` (the default) is exactly the network of Table II, at both sizes."""
    assert _params(create_model("paper-cnn", blocks=2)) == 421_642
    assert create_model("paper-cnn").config.blocks == 2
    model = create_model("paper-cnn", in_channels=3, input_size=224, blocks=2)
    counts = [r.params for r in summarize(model).layers if r.type in ("Conv2d", "Linear")]
    assert counts == [896, 18_496, 25_690_240, 1_290]


@pytest.mark.parametrize(("blocks", "filters", "side", "params"), [
    # conv 1->32 (320) + dense 32*14*14 -> 128 (802,944) + dense 128 -> 10 (1,290)
    (1, (32,), 14, 320 + 802_944 + 1_290),
    # convs 320 + 18,496 + 73,856 (64 -> 128) + dense 128*3*3 -> 128 (147,584) + 1,290
    (3, (32, 64, 128), 3, 320 + 18_496 + 73_856 + 147_584 + 1_290),
    (4, (32, 64, 128, 256), 1, 320 + 18_496 + 73_856 + 295_168 + 32_896 + 1_290),
])
def test_blocks_double_the_filters(blocks: int, filters: tuple, side: int, params: int) -> None:
    model = create_model("paper-cnn", blocks=blocks)
    assert model.config.filters == filters and model.config.blocks == blocks
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in model.features if isinstance(m, torch.nn.MaxPool2d)]
    assert [c.out_channels for c in convs] == list(filters) and len(pools) == blocks
    x = torch.randn(2, 1, 28, 28)
    assert model.features(x).shape == (2, filters[-1], side, side)
    assert model.num_features == filters[-1] * side * side
    assert model(x).shape == (2, 10)
    assert _params(model) == params


def test_blocks_extend_given_filters_and_kernel_size() -> None:
    model = create_model("paper-cnn", filters=(8, 16), blocks=4, kernel_size=5)
    assert model.config.filters == (8, 16, 32, 64)
    assert model.features.conv4.kernel_size == (5, 5)
    assert create_model("paper-cnn-tiny", blocks=3).config.filters == (8, 16, 32)
    assert create_model("paper-cnn-tiny", blocks=1).config.filters == (8,)
    # 224x224 takes seven blocks; the flatten size follows the last map (1x1 after 7 halvings)
    wide = create_model("paper-cnn-tiny", in_channels=3, input_size=224, blocks=7)
    assert wide.num_features == 8 * 2**6 and wide(torch.randn(1, 3, 224, 224)).shape == (1, 10)


@pytest.mark.parametrize(("input_size", "blocks", "message"), [
    (28, 5, r"halves the image 5 time\(s\).*at least 32x32; got 28x28, where at most 4 "
            r"block\(s\) fit\. Use blocks <= 4"),
    (224, 8, r"at least 256x256; got 224x224, where at most 7 block\(s\) fit\. Use blocks <= 7"),
    ((30, 45), 5, r"got 30x45, where at most 4 block\(s\) fit"),
    (1, 1, r"got 1x1, where not even one block fits\. Use images of at least 2x2"),
])
def test_too_many_blocks_names_the_most_that_fit(input_size, blocks: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("paper-cnn", input_size=input_size, blocks=blocks)


@pytest.mark.parametrize("blocks", [0, -1, 2.0, True, "2"])
def test_bad_blocks(blocks: object) -> None:
    with pytest.raises(ConfigError, match=r"'blocks' parameter of model 'paper-cnn' must be an "
                                          r"int >= 1\. Got"):
        create_model("paper-cnn", blocks=blocks)


def test_given_filters_longer_than_blocks() -> None:
    with pytest.raises(ConfigError, match=r"got filters=\[16, 32, 64\] \(3 conv blocks\) but "
                                          r"blocks=2; give 2 filters, or leave out blocks"):
        create_model("paper-cnn", filters=(16, 32, 64), blocks=2)
