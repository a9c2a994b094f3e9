"""The paper's residual CNN."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models import create_model
from cnnlab.models.resnet import BasicBlock, blocks_for_depth


def test_default_mnist_model() -> None:
    model = create_model("resnet")
    assert model.config.widths == (16, 32, 64)
    assert model.config.blocks == (1, 1, 1) and model.config.depth == 8
    assert model.num_features == 64
    assert sum(p.numel() for p in model.parameters()) == 77_754
    assert not model.fixed_size


def test_identity_and_projection_shortcuts() -> None:
    model = create_model("resnet-tiny")
    first, second = model.stages[0][0], model.stages[1][0]
    assert isinstance(first, BasicBlock) and isinstance(first.shortcut, nn.Identity)
    assert isinstance(second.shortcut, nn.Sequential)
    assert second.shortcut.conv.kernel_size == (1, 1) and second.shortcut.conv.stride == (2, 2)


@pytest.mark.parametrize(
    ("depth", "blocks"),
    [(8, (1, 1, 1)), (10, (1, 1, 2)), (12, (1, 2, 2)), (14, (2, 2, 2)), (20, (3, 3, 3))],
)
def test_depth_spreads_blocks_over_later_stages_first(depth: int, blocks: tuple) -> None:
    assert blocks_for_depth(depth, 3) == blocks
    model = create_model("resnet", depth=depth)
    assert model.config.blocks == blocks
    convs = [
        m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and "shortcut" not in n
    ]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) + len(linears) == depth


@pytest.mark.parametrize("depth", [5, 15, 6, 7.0])
def test_invalid_depth_lists_valid_values(depth: object) -> None:
    with pytest.raises(ConfigError, match=r"'depth' parameter of a 3-stage resnet must be an even "
                                          r"int >= 8 \(depth = 2 \+ 2 \* number of blocks: 8, 10"):
        create_model("resnet", depth=depth)


def test_depth_and_blocks_must_agree() -> None:
    assert create_model("resnet-tiny", depth=6, blocks=(1, 1)).config.blocks == (1, 1)
    with pytest.raises(ConfigError, match=r"depth=8 and blocks=\(1, 1\), which disagree"):
        create_model("resnet-tiny", depth=8, blocks=(1, 1))
    with pytest.raises(ConfigError, match=r"one 'blocks' entry per stage width"):
        create_model("resnet-tiny", blocks=(1, 1, 1))


def test_rebuilds_from_its_resolved_config() -> None:
    model = create_model("resnet-tiny", depth=8, kernel_size=5)
    again = create_model("resnet-tiny", **dataclasses.asdict(model.config))
    assert again.config == model.config
    assert again.stages[0][0].conv1.kernel_size == (5, 5)


def test_larger_image_options_and_any_input_size() -> None:
    model = create_model(
        "resnet-tiny", in_channels=3, input_size=64, stem_stride=2, stem_pool=True,
        block_dropout=0.2,
    )
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    assert model(torch.randn(2, 3, 13, 17)).shape == (2, 10)
    assert model(torch.randn(2, 3, 1, 1)).shape == (2, 10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernel_size": 2}, r"'kernel_size' parameter .* odd int"),
        ({"widths": (8, 0)}, r"'widths' parameter .* sequence of ints >= 1\. Got \(8, 0\)"),
        ({"stem_stride": 3}, r"'stem_stride' parameter .* 1 or 2"),
        ({"stem_pool": 1}, r"'stem_pool' parameter .* true or false"),
        ({"block_dropout": -0.1}, r"'block_dropout' parameter"),
    ],
)
def test_invalid_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("resnet-tiny", **kwargs)


def test_maxpool_downsampling_with_an_empty_first_stage() -> None:
    # the default recipe's layout: stem at full size, then pool + block, pool + block
    model = create_model("resnet", widths=(32, 64, 128), blocks=(0, 1, 1),
                         downsample="maxpool")
    assert not any(isinstance(m, torch.nn.Conv2d) and m.stride != (1, 1)
                   for m in model.modules())
    assert model.forward_features(torch.zeros(2, 1, 28, 28)).shape == (2, 128)
    assert model.config.depth == 6
    with pytest.raises(ConfigError, match="'downsample' parameter of model 'resnet' must be"):
        create_model("resnet", downsample="avg")
