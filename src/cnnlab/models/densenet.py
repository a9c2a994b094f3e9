"""DenseNet-BC (Huang et al. 2017): dense blocks with a growth rate, compressing transitions.

Inside a dense block every layer reads the concatenation of all earlier feature maps and adds
``growth_rate`` new channels to it; between blocks a transition compresses the channels by
``compression`` and halves the resolution::

    stem        conv 3x3 (C -> stem_width) + 2x2 max pool          (B, 24, 14, 14)
    block 1     blocks[0] dense layers: + growth_rate channels each  (B, 24 + 4 * 12, 14, 14)
    transition  BN-ReLU-conv 1x1 (x compression) + 2x2 avg pool    (B, 36, 7, 7)
    block 2     ...                                                 (B, 36 + 4 * 12, 7, 7)
    norm        BN + ReLU (the blocks are pre-activation)
    head        global average pool -> dropout -> linear           (B, num_classes)

A dense layer is BN-ReLU-conv 1x1 (``bottleneck * growth_rate`` channels, the "B" of
DenseNet-BC; ``bottleneck=0`` leaves it out) then BN-ReLU-conv 3x3 (``growth_rate``).
``compression`` below 1 is the "C". The ImageNet DenseNets pool their stem too; here that
saves three quarters of block 1's work at 28x28.

Pools use ``ceil_mode`` and global average pooling ends the network, so any input size of at
least 1x1 works (``fixed_size = False``, ``min_size = 1``). Grad-CAM hooks ``features``, whose
output is the last block's map after the final BN and ReLU.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.base import (
    InputSpec,
    PooledClassifier,
    build_config,
    check_bool,
    check_dropout,
    check_number,
    check_positive_int,
    check_widths,
    default_input_spec,
    init_weights,
    register_model,
)

__all__ = ["DenseBlock", "DenseLayer", "DenseNet", "DenseNetConfig", "Transition"]


@dataclass(frozen=True)
class DenseNetConfig:
    """Hyperparameters of :class:`DenseNet`; the defaults are the ``densenet`` MNIST model."""

    growth_rate: int = 12  # channels each dense layer adds (k)
    blocks: tuple[int, ...] = (4, 4)  # dense layers per block
    layers: int | None = None  # instead of blocks: this many layers in every block
    compression: float = 0.5  # a transition keeps this fraction of the channels (theta)
    bottleneck: int = 4  # the 1x1 conv's width, in growth rates (0: no 1x1 conv)
    stem_width: int | None = None  # the stem conv's channels (None: 2 * growth_rate)
    stem_pool: bool = True  # a 2x2 max pool after the stem
    dropout: float = 0.1  # before the linear head


class DenseLayer(nn.Module):
    """[BN-ReLU-conv 1x1 ->] BN-ReLU-conv 3x3: ``growth_rate`` new channels from all earlier."""

    def __init__(self, in_channels: int, growth_rate: int, bottleneck: int) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        if bottleneck:
            channels = bottleneck * growth_rate
            layers.update(norm1=nn.BatchNorm2d(in_channels), act1=nn.ReLU(),
                          conv1=nn.Conv2d(in_channels, channels, 1, bias=False))
        layers.update(norm2=nn.BatchNorm2d(channels), act2=nn.ReLU(),
                      conv2=nn.Conv2d(channels, growth_rate, 3, padding=1, bias=False))
        self.layers = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # (B, growth_rate, H, W)


class DenseBlock(nn.Module):
    """Dense layers, each fed the concatenation of the block's input and every earlier output."""

    def __init__(self, in_channels: int, n_layers: int, growth_rate: int, bottleneck: int
                 ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth_rate, growth_rate, bottleneck)
            for i in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)  # (B, C + growth_rate, H, W)
        return x


class Transition(nn.Sequential):
    """BN-ReLU-conv 1x1 to ``out_channels`` then a 2x2 average pool."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(OrderedDict(
            norm=nn.BatchNorm2d(in_channels), act=nn.ReLU(),
            conv=nn.Conv2d(in_channels, out_channels, 1, bias=False),
            pool=nn.AvgPool2d(2, ceil_mode=True),
        ))


class DenseNet(PooledClassifier):
    """Stem, dense blocks with transitions between them, BN-ReLU, global pool, dropout, linear.

    ``forward_features`` returns the pooled features ``(N, channels of the last block)``."""

    fixed_size = False
    min_size = 1

    def __init__(self, input_spec: InputSpec, num_classes: int, config: DenseNetConfig) -> None:
        super().__init__(input_spec, num_classes)
        self.config = config
        k = config.growth_rate
        channels = config.stem_width or 2 * k
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            stem=nn.Conv2d(input_spec.channels, channels, 3, padding=1, bias=False))
        if config.stem_pool:
            layers["stem_pool"] = nn.MaxPool2d(2, ceil_mode=True)
        for i, n in enumerate(config.blocks):
            layers[f"block{i + 1}"] = DenseBlock(channels, n, k, config.bottleneck)
            channels += n * k
            if i < len(config.blocks) - 1:
                out = max(1, math.floor(config.compression * channels))
                layers[f"transition{i + 1}"] = Transition(channels, out)
                channels = out
        layers.update(norm=nn.BatchNorm2d(channels), act=nn.ReLU())
        self.features = nn.Sequential(layers)
        # features (B, 84, 7, 7) for `densenet` at 28x28, pooled to (B, 84)
        self._pooled_head(channels, num_classes, config.dropout)
        self.apply(init_weights)


def _create(name: str, in_channels: int, num_classes: int, input_size: tuple[int, int],
            defaults: DenseNetConfig, overrides: dict[str, Any]) -> DenseNet:
    """Validate the config for model ``name`` and build it.

    Raises:
        ConfigError: unknown or invalid options.
    """
    config = build_config(name, defaults, overrides)
    check_positive_int(name, "growth_rate", config.growth_rate)
    if config.layers is not None:
        if "blocks" in overrides:
            raise ConfigError(f"model {name!r} got both 'layers' and 'blocks'; give one of "
                              "them (layers=n means n dense layers in every block)")
        n = check_positive_int(name, "layers", config.layers)
        blocks = (n,) * len(config.blocks)
    else:
        blocks = check_widths(name, "blocks", config.blocks)
    check_number(name, "compression", config.compression, low=0.0, high=1.0, low_open=True)
    bottleneck = config.bottleneck
    if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or bottleneck < 0:
        raise ConfigError(f"The 'bottleneck' parameter of model {name!r} must be an int >= 0 "
                          f"(0: no 1x1 conv). Got {bottleneck!r} instead.")
    if config.stem_width is not None:
        check_positive_int(name, "stem_width", config.stem_width)
    check_bool(name, "stem_pool", config.stem_pool)
    check_dropout(name, config.dropout)
    config = replace(config, blocks=blocks)
    return DenseNet(default_input_spec(in_channels, input_size), num_classes, config)


@register_model("densenet", description="DenseNet-BC: growth rate 12, two blocks of 4 layers, "
                                        "compression 0.5", cam_layer="features")
def densenet(in_channels: int, num_classes: int, input_size: tuple[int, int],
             **kwargs: Any) -> DenseNet:
    """The MNIST default (65 k parameters, 7.8 M MACs at 28x28); kwargs are
    :class:`DenseNetConfig` fields (``growth_rate``, ``blocks``, ``compression``, ...)."""
    return _create("densenet", in_channels, num_classes, input_size, DenseNetConfig(), kwargs)


@register_model("densenet-tiny", description="Two blocks of two 4-growth dense layers for tests",
                tiny=True, cam_layer="features")
def densenet_tiny(in_channels: int, num_classes: int, input_size: tuple[int, int],
                  **kwargs: Any) -> DenseNet:
    """Two blocks of two bottlenecked dense layers and a transition between them, for tests."""
    defaults = DenseNetConfig(growth_rate=4, blocks=(2, 2), bottleneck=2)
    return _create("densenet-tiny", in_channels, num_classes, input_size, defaults, kwargs)
