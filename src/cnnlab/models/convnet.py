"""A plain conv-BN-ReLU network: the ``convnet`` model of the ``fast`` recipe.

Made for speed on a CPU: a narrow full-resolution stem, early max pooling, no residual
additions, and a flatten head that keeps the spatial layout the last conv learned::

    stem      conv kxk (C -> 16) + BN + ReLU + 2x2 max pool        (B, 16, 14, 14)
    blocks    conv 3x3 (16 -> 32) + BN + ReLU + 2x2 max pool       (B, 32, 7, 7)
              conv 3x3 (32 -> 64) + BN + ReLU                      (B, 64, 7, 7)
    head      flatten -> dropout -> linear                         (B, num_classes)

With Adam, one-cycle and label smoothing it passes 99 % on MNIST in one epoch, at about three
times the paper CNN's training throughput (benchmarks/bench_recipes.py). The flatten size is
derived from ``input_size``, so the model is ``fixed_size``.
"""

from __future__ import annotations

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

__all__ = ["ConvNet", "ConvNetConfig"]


@dataclass(frozen=True)
class ConvNetConfig:
    """Hyperparameters of :class:`ConvNet`; the defaults are the ``convnet`` model."""

    widths: tuple[int, ...] = (16, 32, 64)  # channels of the stem and each following conv
    pools: tuple[bool, ...] = (True, True, False)  # a 2x2 max pool after each conv
    kernel_size: int = 3  # odd; every conv, "same" padding
    dropout: float = 0.0  # before the linear head


def _conv_bn_relu(in_channels: int, out_channels: int, k: int) -> list[tuple[str, nn.Module]]:
    return [("conv", nn.Conv2d(in_channels, out_channels, k, padding=k // 2, bias=False)),
            ("bn", nn.BatchNorm2d(out_channels)), ("act", nn.ReLU())]


class ConvNet(Classifier):
    """``len(widths)`` conv-BN-ReLU layers with optional pooling, flatten, dropout, linear.

    ``forward_features`` returns the flattened last feature map ``(N, C * H * W)``.
    """

    fixed_size = True

    def __init__(self, input_spec: InputSpec, num_classes: int, config: ConvNetConfig) -> None:
        super().__init__(input_spec, num_classes)
        self.config = config
        layers: list[nn.Module] = []
        in_channels, h, w = input_spec.channels, input_spec.height, input_spec.width
        for width, pool in zip(config.widths, config.pools, strict=True):
            block = OrderedDict(_conv_bn_relu(in_channels, width, config.kernel_size))
            if pool:
                block["pool"] = nn.MaxPool2d(2)
                h, w = h // 2, w // 2
            layers.append(nn.Sequential(block))
            in_channels = width
        if h < 1 or w < 1:
            raise ConfigError(
                f"model 'convnet' pools {sum(config.pools)} times, too often for "
                f"{input_spec.height}x{input_spec.width} inputs; use fewer pools or larger images"
            )
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten(1)
        self.num_features = in_channels * h * w
        self.drop = nn.Dropout(config.dropout)
        self.fc = nn.Linear(self.num_features, num_classes)
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 64, 7, 7) for `convnet` at 28x28
        return self.flatten(x)  # (B, 3136)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(features)  # (B, 3136)
        return x if pre_logits else self.fc(x)  # (B, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = new_head(self.fc, num_classes)
        self.num_classes = num_classes


def _create(name: str, in_channels: int, num_classes: int, input_size: tuple[int, int],
            defaults: ConvNetConfig, overrides: dict[str, Any]) -> ConvNet:
    """Validate the config for model ``name`` and build it.

    Raises:
        ConfigError: unknown or invalid options.
    """
    config = build_config(name, defaults, overrides)
    widths = check_widths(name, "widths", config.widths)
    pools = tuple(config.pools)
    if len(pools) != len(widths) or not all(isinstance(p, bool) for p in pools):
        raise ConfigError(
            f"The 'pools' parameter of model {name!r} must hold one true/false per width "
            f"({len(widths)}). Got {config.pools!r} instead."
        )
    check_kernel_size(name, config.kernel_size)
    check_dropout(name, config.dropout)
    config = ConvNetConfig(widths=widths, pools=pools, kernel_size=config.kernel_size,
                           dropout=config.dropout)
    return ConvNet(default_input_spec(in_channels, input_size), num_classes, config)


@register_model("convnet", description="Plain conv-BN net 16/32/64 of the fast recipe",
                cheap=True)
def convnet(in_channels: int, num_classes: int, input_size: tuple[int, int],
            **kwargs: Any) -> ConvNet:
    """The fast recipe's model (about 55 k parameters at 28x28)."""
    return _create("convnet", in_channels, num_classes, input_size, ConvNetConfig(), kwargs)
