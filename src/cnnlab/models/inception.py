"""Inception-style multi-scale CNN: parallel 1x1 / 3x3 / 5x5 branches, and strided reductions.

The paper's novelty is "multiple convolutional layers with varied filter sizes and strides";
this is the Inception design (Szegedy et al. 2015, 2016) that does exactly that::

    stem       conv 3x3 (C -> stem_width) + BN + ReLU               (B, 32, 28, 28)
    stage i    a reduction (stride 2), then blocks[i] inception blocks
                                                                    (B, widths[i], H/2^(i+1), ..)
    head       global average pool -> dropout -> linear             (B, num_classes)

An **inception block** sees its input at four scales at once and concatenates the answers,
a quarter of its ``width`` each:

    1x1                       the pixel itself
    1x1 -> 3x3                a 3x3 neighbourhood
    1x1 -> 5x5                a 5x5 neighbourhood (two 3x3 convs when ``factorised``, the same
                              field for 18/25 of the weights, Szegedy et al. 2016)
    3x3 max pool -> 1x1       the strongest response nearby

A **reduction** halves the height and width with two parallel strided branches, a 3x3 conv of
stride 2 (``width - in_width`` channels) and a 3x3 max pool of stride 2 (the ``in_width`` input
channels as they are), concatenated: the grid reduction of Szegedy et al. (2016), which widens
while it shrinks without a costly full-width strided conv. So ``widths`` must grow, each above
the one before it (``stem_width`` for the first).

Every conv is followed by batch norm and ReLU. Global average pooling makes the model accept
any input size (``fixed_size = False``); a 3x3 stride-2 conv or pool with padding 1 maps n >= 1
pixels to ceil(n / 2) >= 1, so ``min_size`` is 1. Grad-CAM hooks ``features``, whose output is
the last stage's map.
"""

from __future__ import annotations

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
    check_positive_int,
    check_widths,
    default_input_spec,
    init_weights,
    register_model,
)

__all__ = ["ConvBNReLU", "Inception", "InceptionBlock", "InceptionConfig", "Reduction"]


@dataclass(frozen=True)
class InceptionConfig:
    """Hyperparameters of :class:`Inception`; the defaults are the ``inception`` MNIST model."""

    stem_width: int = 32  # channels of the stem's 3x3 conv, at full resolution
    widths: tuple[int, ...] = (64, 128)  # channels of each stage; multiples of 4, increasing
    blocks: tuple[int, ...] = (1, 1)  # inception blocks per stage, after its reduction
    width: int | None = None  # instead of widths: width, 2 * width, ... (as many stages as
    # blocks has), with stem_width = width // 2 unless it is given
    factorised: bool = True  # the 5x5 branch as two 3x3 convs
    dropout: float = 0.1  # before the linear head


class ConvBNReLU(nn.Sequential):
    """conv kxk (stride s, "same" padding) -> BN -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, k: int, stride: int = 1) -> None:
        super().__init__(OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, k, stride, padding=k // 2, bias=False),
            bn=nn.BatchNorm2d(out_channels),
            act=nn.ReLU(),
        ))


class InceptionBlock(nn.Module):
    """Four parallel branches at 1x1, 3x3, 5x5 and pooled scale, concatenated to ``width``."""

    def __init__(self, in_channels: int, width: int, factorised: bool) -> None:
        super().__init__()
        b = width // 4
        self.branch1 = ConvBNReLU(in_channels, b, 1)
        self.branch3 = nn.Sequential(ConvBNReLU(in_channels, b, 1), ConvBNReLU(b, b, 3))
        self.branch5 = (nn.Sequential(ConvBNReLU(in_channels, b, 1), ConvBNReLU(b, b, 3),
                                      ConvBNReLU(b, b, 3)) if factorised
                        else nn.Sequential(ConvBNReLU(in_channels, b, 1), ConvBNReLU(b, b, 5)))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1),
                                         ConvBNReLU(in_channels, width - 3 * b, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x),
                          self.branch_pool(x)], dim=1)  # (B, width, H, W)


class Reduction(nn.Module):
    """Halve H and W: a strided 3x3 conv and a strided 3x3 max pool side by side."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_channels, width - in_channels, 3, stride=2)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.pool(x)], dim=1)  # (B, width, ceil(H/2), ceil(W/2))


class Inception(PooledClassifier):
    """Stem, stages of a reduction plus inception blocks, global average pool, dropout, linear.

    ``forward_features`` returns the pooled features ``(N, widths[-1])``."""

    fixed_size = False
    min_size = 1

    def __init__(self, input_spec: InputSpec, num_classes: int, config: InceptionConfig) -> None:
        super().__init__(input_spec, num_classes)
        self.config = config
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            stem=ConvBNReLU(input_spec.channels, config.stem_width, 3))
        in_channels = config.stem_width
        for i, (width, n) in enumerate(zip(config.widths, config.blocks, strict=True)):
            stage: list[nn.Module] = [Reduction(in_channels, width)]
            stage += [InceptionBlock(width, width, config.factorised) for _ in range(n)]
            layers[f"stage{i + 1}"] = nn.Sequential(*stage)
            in_channels = width
        self.features = nn.Sequential(layers)
        # features (B, 128, 7, 7) for `inception` at 28x28, pooled to (B, 128)
        self._pooled_head(in_channels, num_classes, config.dropout)
        self.apply(init_weights)


def _create(name: str, in_channels: int, num_classes: int, input_size: tuple[int, int],
            defaults: InceptionConfig, overrides: dict[str, Any]) -> Inception:
    """Validate the config for model ``name`` and build it.

    Raises:
        ConfigError: unknown or invalid options; widths that are not multiples of 4 or do not
            grow.
    """
    config = build_config(name, defaults, overrides)
    stem = check_positive_int(name, "stem_width", config.stem_width)
    if config.width is not None:
        if "widths" in overrides:
            raise ConfigError(f"model {name!r} got both 'width' and 'widths'; give one of them "
                              "(width=w means widths w, 2w, ...)")
        base = check_positive_int(name, "width", config.width)
        widths = tuple(base * 2**i for i in range(len(config.blocks)))
        if "stem_width" not in overrides:
            stem = max(1, base // 2)
    else:
        widths = check_widths(name, "widths", config.widths)
    blocks = check_widths(name, "blocks", config.blocks)
    if len(blocks) != len(widths):
        raise ConfigError(f"model {name!r} needs one 'blocks' entry per stage width; got "
                          f"widths={widths} and blocks={blocks}.")
    if any(w % 4 for w in widths):
        raise ConfigError(
            f"The 'widths' parameter of model {name!r} must hold multiples of 4 (an inception "
            f"block splits its width over four branches). Got {widths} instead.")
    previous = (stem, *widths[:-1])
    if any(w <= p for w, p in zip(widths, previous, strict=True)):
        raise ConfigError(
            f"The 'widths' parameter of model {name!r} must grow stage by stage, the first "
            f"above stem_width={stem} (a reduction adds a strided conv's channels to the "
            f"pooled input's). Got {widths} instead.")
    check_bool(name, "factorised", config.factorised)
    check_dropout(name, config.dropout)
    config = replace(config, stem_width=stem, widths=widths, blocks=blocks)
    return Inception(default_input_spec(in_channels, input_size), num_classes, config)


@register_model("inception", description="Multi-scale CNN: parallel 1x1/3x3/5x5/pool branches, "
                                         "strided reductions, 64/128 wide",
                cam_layer="features")
def inception(in_channels: int, num_classes: int, input_size: tuple[int, int],
              **kwargs: Any) -> Inception:
    """The MNIST default (0.10 M parameters, 8.2 M MACs at 28x28); kwargs are
    :class:`InceptionConfig` fields (``widths``, ``blocks``, ``factorised``, ...)."""
    return _create("inception", in_channels, num_classes, input_size, InceptionConfig(), kwargs)


@register_model("inception-tiny", description="One-stage 16-wide inception net for tests",
                tiny=True, cam_layer="features")
def inception_tiny(in_channels: int, num_classes: int, input_size: tuple[int, int],
                   **kwargs: Any) -> Inception:
    """A reduction and one inception block with an unfactorised 5x5 branch, for tests."""
    defaults = InceptionConfig(stem_width=8, widths=(16,), blocks=(1,), factorised=False)
    return _create("inception-tiny", in_channels, num_classes, input_size, defaults, kwargs)
