"""LeNet-5 (LeCun, Bottou, Bengio and Haffner, 1998), sized from the input.

The 1998 network reads a 32x32 image: C1 conv 6@5x5 -> 28x28, S2 subsampling -> 14x14,
C3 conv 16@5x5 -> 10x10, S4 subsampling -> 5x5, C5 120 units, F6 84 units, output. MNIST's
28x28 digits were centred on that 32x32 canvas, which is what ``padding=2`` on C1 does here.

Simplifications, as in most modern re-implementations: C3 connects to all 6 maps (the paper
used a hand-made partial connection table), S2/S4 are plain average (or max) pools without
the trainable coefficient, the activation is ``tanh`` (or ReLU) instead of 1.7159 tanh(2x/3),
and the output is a linear layer instead of Euclidean RBF units. C5 is a linear layer on the
flattened 16x5x5 maps, which is the same as the paper's 5x5 convolution at 32x32 input.

The flatten size is derived from ``input_size``, so the model is ``fixed_size``. At 1x28x28 it
has 61,706 parameters, so it serves the tests as it is (no tiny variant).
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
    default_input_spec,
    init_weights,
    new_head,
    register_model,
)

__all__ = ["LeNet5", "LeNetConfig"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
_POOLS: dict[str, type[nn.Module]] = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


@dataclass(frozen=True)
class LeNetConfig:
    """Hyperparameters of :class:`LeNet5`; the defaults follow the 1998 paper."""

    padding: int = 2  # of C1; 2 puts a 28x28 digit on LeNet's 32x32 canvas, use 0 for 32x32 input
    activation: str = "tanh"  # "tanh" (1998) or "relu"
    pool: str = "avg"  # "avg" (1998 subsampling) or "max"
    dropout: float = 0.0  # dropout before the output layer (the 1998 net has none)


class LeNet5(Classifier):
    """C1 conv 6@5x5, S2 pool, C3 conv 16@5x5, S4 pool, flatten, C5 120, F6 84, output.

    ``forward_features`` returns the flattened S4 maps ``(N, 16 * 5 * 5)`` at 28x28;
    ``forward_head`` is C5, F6 and the output layer.
    """

    fixed_size = True

    def __init__(self, input_spec: InputSpec, num_classes: int, config: LeNetConfig) -> None:
        super().__init__(input_spec, num_classes)
        self.config = config
        act, pool = _ACTIVATIONS[config.activation], _POOLS[config.pool]
        self.features = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(input_spec.channels, 6, 5, padding=config.padding),  # C1
            act1=act(),
            pool1=pool(2),  # S2
            conv2=nn.Conv2d(6, 16, 5),  # C3
            act2=act(),
            pool2=pool(2),  # S4
        ))
        self.flatten = nn.Flatten(1)
        height, width = _feature_size(input_spec.height, input_spec.width, config.padding)
        self.num_features = 16 * height * width
        self.fc1 = nn.Linear(self.num_features, 120)  # C5
        self.act3 = act()
        self.fc2 = nn.Linear(120, 84)  # F6
        self.act4 = act()
        self.drop = nn.Dropout(config.dropout)
        self.fc3 = nn.Linear(84, num_classes)  # output
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 16, 5, 5) at 28x28 with padding 2
        return self.flatten(x)  # (B, 400)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.act3(self.fc1(features))  # (B, 120)
        x = self.drop(self.act4(self.fc2(x)))  # (B, 84)
        return x if pre_logits else self.fc3(x)  # (B, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc3 = new_head(self.fc3, num_classes)
        self.num_classes = num_classes


def _feature_size(height: int, width: int, padding: int) -> tuple[int, int]:
    """Spatial size after C1 (5x5, ``padding``), S2 (2x2), C3 (5x5) and S4 (2x2); may be <= 0."""

    def size(n: int) -> int:
        n = (n + 2 * padding - 4) // 2  # C1, S2
        return (n - 4) // 2  # C3, S4

    return size(height), size(width)


def _create(
    name: str, in_channels: int, num_classes: int, input_size: tuple[int, int],
    defaults: LeNetConfig, overrides: dict[str, Any],
) -> LeNet5:
    """Validate the config for model ``name`` and build it.

    Raises:
        ConfigError: unknown or invalid options, or an input too small for the two 5x5 convs.
    """
    config = build_config(name, defaults, overrides)
    if config.activation not in _ACTIVATIONS:
        raise ConfigError(
            f"The 'activation' parameter of model {name!r} must be one of "
            f"{sorted(_ACTIVATIONS)}. Got {config.activation!r} instead."
        )
    if config.pool not in _POOLS:
        raise ConfigError(
            f"The 'pool' parameter of model {name!r} must be one of {sorted(_POOLS)}. "
            f"Got {config.pool!r} instead."
        )
    if isinstance(config.padding, bool) or not isinstance(config.padding, int) \
            or config.padding < 0:
        raise ConfigError(
            f"The 'padding' parameter of model {name!r} must be an int >= 0. "
            f"Got {config.padding!r} instead."
        )
    check_dropout(name, config.dropout)
    if min(_feature_size(*input_size, config.padding)) < 1:
        smallest = 16 - 2 * config.padding
        raise ConfigError(
            f"model {name!r} with padding={config.padding} needs input_size of at least "
            f"{smallest}x{smallest}; got {input_size[0]}x{input_size[1]}."
        )
    return LeNet5(default_input_spec(in_channels, input_size), num_classes, config)


@register_model(
    "lenet5", description="LeNet-5 (LeCun et al. 1998): conv 6@5x5, conv 16@5x5, FC 120-84",
    cheap=True, cam_layer="features",
)
def lenet5(
    in_channels: int, num_classes: int, input_size: tuple[int, int], **kwargs: Any
) -> LeNet5:
    """LeNet-5; kwargs are :class:`LeNetConfig` fields (``activation``, ``pool``, ...)."""
    return _create("lenet5", in_channels, num_classes, input_size, LeNetConfig(), kwargs)
