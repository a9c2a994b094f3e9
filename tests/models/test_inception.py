"""The Inception-style multi-scale network: branches, reductions, bad settings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models import create_model
from cnnlab.models.inception import InceptionBlock, Reduction


def _kernels(module: nn.Module) -> list[int]:
    return [m.kernel_size[0] for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_default_mnist_model_sees_several_scales_with_strides() -> None:
    model = create_model("inception")
    assert model.config.widths == (64, 128) and not model.fixed_size
    blocks = [m for m in model.modules() if isinstance(m, InceptionBlock)]
    reductions = [m for m in model.modules() if isinstance(m, Reduction)]
    assert len(blocks) == 2 and len(reductions) == 2
    assert reductions[0].conv.conv.stride == (2, 2) and reductions[0].pool.stride == 2
    # factorised: the 5x5 field as two 3x3 convs
    assert _kernels(blocks[0].branch5) == [1, 3, 3]
    assert _kernels(create_model("inception", factorised=False).features.stage1[1].branch5) \
        == [1, 5]
    seen: list[torch.Size] = []
    model.features.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    model(torch.randn(2, 1, 28, 28))
    assert seen == [torch.Size([2, 128, 7, 7])]


def test_block_concatenates_four_branches() -> None:
    block = InceptionBlock(8, 16, factorised=True).eval()
    x = torch.randn(1, 8, 5, 5)
    y = block(x)
    assert y.shape == (1, 16, 5, 5)
    torch.testing.assert_close(y[:, :4], block.branch1(x))
    torch.testing.assert_close(y[:, 12:], block.branch_pool(x))


def test_width_knob_doubles_per_stage() -> None:
    config = create_model("inception", width=32).config
    assert config.widths == (32, 64) and config.stem_width == 16
    assert create_model("inception", width=8, stem_width=4).config.stem_width == 4
    with pytest.raises(ConfigError, match="both 'width' and 'widths'"):
        create_model("inception", width=32, widths=(32, 64))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"widths": (62, 128)}, r"'widths' parameter .* multiples of 4.*\(62, 128\)"),
        ({"widths": (128, 64)}, r"must grow stage by stage.*stem_width=32"),
        ({"widths": (16, 32)}, r"must grow stage by stage.*stem_width=32"),
        ({"blocks": (1,)}, r"one 'blocks' entry per stage width"),
        ({"factorised": "yes"}, r"'factorised' parameter .* true or false"),
        ({"stem_width": 0}, r"'stem_width' parameter .* int >= 1"),
    ],
)
def test_invalid_settings_are_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("inception", **kwargs)


def test_any_input_size() -> None:
    model = create_model("inception-tiny", in_channels=3).eval()
    for size in (1, 2, 7, 33):
        assert model(torch.randn(1, 3, size, size)).shape == (1, 10)
