"""The paper's proposed model: a small residual CNN with batch norm and dropout.

The paper describes its model only in words (residual connections as in ResNet, batch norm
after the convolutions, dropout, a 10-way softmax) plus a tuning grid over the number of
layers (5, 10, 15) and the filter size (3x3, 5x5, 7x7). This is the CIFAR-style ResNet of
He et al. (2016) that fits that description, with both knobs as keyword arguments::

    stem      conv kxk (stride 1 or 2) + BN + ReLU [+ 3x3/2 max pool]
    stages    len(widths) stages of BasicBlocks; stage 0 keeps H, W, every later one halves them
    head      global average pool -> dropout -> linear

A BasicBlock is conv kxk -> BN -> ReLU [-> dropout] -> conv kxk -> BN, plus a shortcut (the
identity, or a 1x1 conv + BN projection where the width or the stride changes), then ReLU.

``depth`` counts the weighted layers on the main path as He et al. do (ResNet-18, ResNet-20):
the stem conv, two convs per block and the linear head, so ``depth = 2 + 2 * sum(blocks)``.
Given ``depth`` instead of ``blocks``, the blocks are spread over the stages, later (cheaper)
stages first: depth 8 -> (1, 1, 1), 10 -> (1, 1, 2), 14 -> (2, 2, 2).

The ``resnet`` default uses the widths of He et al.'s CIFAR ResNets (16/32/64) at depth 8,
about twice the paper CNN's cost at 28x28 (9.3 M vs 4.2 M multiply-accumulates per image),
because training runs on two CPU cores; widen it with ``widths=(32, 64, 128)``.

Global average pooling makes the model accept any input size (``fixed_size = False``): a
"same"-padded stride-2 conv or pool maps n >= 1 pixels to ceil(n / 2) >= 1, so ``min_size`` is 1.

To add a registered variant, copy the ``resnet_tiny`` builder at the end of this file and
change its name and its :class:`ResNetConfig` defaults.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.base import (
    Classifier,
    InputSpec,
    build_config,
    check_dropout,
    check_kernel_size,
    check_widths,
    default_input_spec,
    init_weights,
    new_head,
    register_model,
)

__all__ = ["BasicBlock", "ResNet", "ResNetConfig", "blocks_for_depth"]


@dataclass(frozen=True)
class ResNetConfig:
    """Hyperparameters of :class:`ResNet`; the defaults are the ``resnet`` MNIST model."""

    widths: tuple[int, ...] = (16, 32, 64)  # channels of each stage (the stem makes widths[0])
    blocks: tuple[int, ...] = (1, 1, 1)  # BasicBlocks per stage, one entry per width
    depth: int | None = None  # instead of blocks: 2 + 2 * sum(blocks); must be even
    kernel_size: int = 3  # odd; stem and block convs ("same" padding), shortcuts stay 1x1
    stem_stride: int = 1  # 2 halves H, W in the stem (larger images)
    stem_pool: bool = False  # a 3x3/2 max pool after the stem, as in the ImageNet ResNets
    downsample: str = "stride"  # how later stages halve H, W: "stride" (2 in the first conv
    # and the shortcut) or "maxpool" (a 2x2 max pool before the stage; cheaper on a CPU)
    dropout: float = 0.1  # before the linear head
    block_dropout: float = 0.0  # between the two convs of each block (Wide ResNet style)


class BasicBlock(nn.Module):
    """Two kxk conv + BN layers with a residual shortcut (He et al. 2016, figure 2)."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, kernel_size: int, dropout: float
    ) -> None:
        super().__init__()
        k = kernel_size
        self.conv1 = nn.Conv2d(in_channels, out_channels, k, stride, padding=k // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, k, 1, padding=k // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:  # projection: match width and size
            self.shortcut: nn.Module = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                bn=nn.BatchNorm2d(out_channels),
            ))
        else:
            self.shortcut = nn.Identity()
        self.act2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop(self.act1(self.bn1(self.conv1(x))))  # (B, out, H/s, W/s)
        out = self.bn2(self.conv2(out))  # (B, out, H/s, W/s)
        return self.act2(out + self.shortcut(x))  # (B, out, H/s, W/s)


class ResNet(Classifier):
    """Stem, ``len(widths)`` stages of :class:`BasicBlock`, global average pool, dropout, linear.

    ``forward_features`` returns the globally pooled features ``(N, widths[-1])``.
    """

    fixed_size = False
    min_size = 1

    def __init__(self, input_spec: InputSpec, num_classes: int, config: ResNetConfig) -> None:
        super().__init__(input_spec, num_classes)
        self.config = config
        k = config.kernel_size
        stem: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv2d(input_spec.channels, config.widths[0], k, config.stem_stride,
                           padding=k // 2, bias=False),
            bn=nn.BatchNorm2d(config.widths[0]),
            act=nn.ReLU(),
        )
        if config.stem_pool:
            stem["pool"] = nn.MaxPool2d(3, stride=2, padding=1)
        self.stem = nn.Sequential(stem)
        stages: list[nn.Module] = []
        in_channels = config.widths[0]
        pool_first = config.downsample == "maxpool"
        for i, (width, n_blocks) in enumerate(zip(config.widths, config.blocks, strict=True)):
            blocks: list[nn.Module] = [nn.MaxPool2d(2)] if i > 0 and pool_first else []
            for j in range(n_blocks):
                stride = 2 if i > 0 and j == 0 and not pool_first else 1
                blocks.append(BasicBlock(in_channels, width, stride, k, config.block_dropout))
                in_channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.num_features = in_channels
        self.drop = nn.Dropout(config.dropout)
        self.fc = nn.Linear(in_channels, num_classes)
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, 16, 28, 28) for `resnet` at 28x28
        x = self.stages(x)  # (B, 64, 7, 7)
        return self.flatten(self.pool(x))  # (B, 64)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(features)  # (B, 64)
        return x if pre_logits else self.fc(x)  # (B, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = new_head(self.fc, num_classes)
        self.num_classes = num_classes


def blocks_for_depth(depth: int, stages: int) -> tuple[int, ...]:
    """Blocks per stage for ``depth = 2 + 2 * sum(blocks)``, extra blocks on the later stages.

    Raises:
        ConfigError: ``depth`` is odd or too small to give every stage one block.
    """
    smallest = 2 + 2 * stages
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < smallest or depth % 2:
        raise ConfigError(
            f"The 'depth' parameter of a {stages}-stage resnet must be an even int >= "
            f"{smallest} (depth = 2 + 2 * number of blocks: {smallest}, {smallest + 2}, "
            f"{smallest + 4}, ...). Got {depth!r} instead."
        )
    total = (depth - 2) // 2
    base, extra = divmod(total, stages)
    return tuple(base + (1 if i >= stages - extra else 0) for i in range(stages))


def _create(
    name: str, in_channels: int, num_classes: int, input_size: tuple[int, int],
    defaults: ResNetConfig, overrides: dict[str, Any],
) -> ResNet:
    """Validate the config for model ``name``, resolve ``depth`` and build it.

    Raises:
        ConfigError: unknown or invalid options, or ``depth`` and ``blocks`` that disagree.
    """
    config = build_config(name, defaults, overrides)
    widths = check_widths(name, "widths", config.widths)
    if config.depth is not None and "blocks" not in overrides:
        blocks = blocks_for_depth(config.depth, len(widths))
    else:
        # the first stage may be empty (the stem alone works at full resolution)
        first, rest = tuple(config.blocks[:1]), tuple(config.blocks[1:])
        if first == (0,) and rest:
            blocks = (0, *check_widths(name, "blocks", rest))
        else:
            blocks = check_widths(name, "blocks", config.blocks)
        # both given is fine when they agree (a config saved from model.config has both)
        if config.depth is not None and config.depth != 2 + 2 * sum(blocks):
            raise ConfigError(
                f"model {name!r} got depth={config.depth!r} and blocks={blocks}, which disagree "
                f"(depth = 2 + 2 * sum(blocks) = {2 + 2 * sum(blocks)}); give one of them."
            )
    if len(blocks) != len(widths):
        raise ConfigError(
            f"model {name!r} needs one 'blocks' entry per stage width; got widths={widths} "
            f"and blocks={blocks}."
        )
    check_kernel_size(name, config.kernel_size)
    if config.stem_stride not in (1, 2):
        raise ConfigError(
            f"The 'stem_stride' parameter of model {name!r} must be 1 or 2. "
            f"Got {config.stem_stride!r} instead."
        )
    if not isinstance(config.stem_pool, bool):
        raise ConfigError(
            f"The 'stem_pool' parameter of model {name!r} must be true or false. "
            f"Got {config.stem_pool!r} instead."
        )
    if config.downsample not in ("stride", "maxpool"):
        raise ConfigError(
            f"The 'downsample' parameter of model {name!r} must be 'stride' or 'maxpool'. "
            f"Got {config.downsample!r} instead."
        )
    check_dropout(name, config.dropout)
    check_dropout(name, config.block_dropout, "block_dropout")
    config = dataclasses.replace(config, widths=widths, blocks=blocks, depth=2 + 2 * sum(blocks))
    return ResNet(default_input_spec(in_channels, input_size), num_classes, config)


@register_model(
    "resnet",
    description="The paper's residual CNN with BN and dropout: widths 16/32/64, depth 8",
    cam_layer="stages",
)
def resnet(
    in_channels: int, num_classes: int, input_size: tuple[int, int], **kwargs: Any
) -> ResNet:
    """The MNIST default (78 k parameters, 9.3 M MACs at 28x28).

    kwargs are :class:`ResNetConfig` fields (``depth``, ``kernel_size``, ``widths``, ...);
    ``depth=20`` gives He et al.'s CIFAR ResNet-20.
    """
    return _create("resnet", in_channels, num_classes, input_size, ResNetConfig(), kwargs)


@register_model("resnet-tiny", description="Two-stage 8/32-wide resnet for tests", tiny=True,
                cam_layer="stages")
def resnet_tiny(
    in_channels: int, num_classes: int, input_size: tuple[int, int], **kwargs: Any
) -> ResNet:
    """An identity and a projection shortcut in 14 k parameters, for tests."""
    defaults = ResNetConfig(widths=(8, 32), blocks=(1, 1))
    return _create("resnet-tiny", in_channels, num_classes, input_size, defaults, kwargs)
