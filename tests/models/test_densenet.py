"""DenseNet-BC: dense connectivity, growth rate, compression, bad settings."""

from __future__ import annotations

import pytest
import torch

from cnnlab.errors import ConfigError
from cnnlab.models import create_model
from cnnlab.models.densenet import DenseBlock, Transition


def test_default_mnist_model_channel_arithmetic() -> None:
    model = create_model("densenet")
    # stem 24, + 4 x 12 = 72, compressed to 36, + 4 x 12 = 84
    assert model.num_features == 84
    transition = model.features.transition1
    assert isinstance(transition, Transition)
    assert (transition.conv.in_channels, transition.conv.out_channels) == (72, 36)
    seen: list[torch.Size] = []
    model.features.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    model(torch.randn(2, 1, 28, 28))
    assert seen == [torch.Size([2, 84, 7, 7])]


def test_every_layer_reads_all_earlier_maps() -> None:
    block = DenseBlock(5, 3, growth_rate=4, bottleneck=0).eval()
    assert [layer.layers.conv2.in_channels for layer in block.layers] == [5, 9, 13]
    x = torch.randn(1, 5, 6, 6)
    y = block(x)
    assert y.shape == (1, 17, 6, 6)
    torch.testing.assert_close(y[:, :5], x)  # the input is passed on untouched


def test_knobs() -> None:
    m = create_model("densenet", growth_rate=8, layers=3, compression=1.0, bottleneck=0)
    assert m.config.blocks == (3, 3) and m.num_features == 16 + 24 + 24
    assert not hasattr(m.features.block1.layers[0].layers, "conv1")  # no bottleneck


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compression": 0.0}, r"'compression' parameter .* \(0, 1\]\. Got 0\.0"),
        ({"compression": 1.5}, r"'compression' parameter .* \(0, 1\]"),
        ({"growth_rate": 0}, r"'growth_rate' parameter .* int >= 1"),
        ({"bottleneck": -1}, r"'bottleneck' parameter .* int >= 0"),
        ({"layers": 2, "blocks": (2, 2)}, r"both 'layers' and 'blocks'"),
        ({"blocks": ()}, r"'blocks' parameter .* non-empty"),
    ],
)
def test_invalid_settings_are_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("densenet", **kwargs)


def test_any_input_size() -> None:
    model = create_model("densenet-tiny").eval()
    for size in (1, 3, 9):
        assert model(torch.randn(1, 1, size, size)).shape == (1, 10)
