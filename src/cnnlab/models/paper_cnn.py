"""The CNN of the paper's Table II, with the kernel-size and depth knobs of its Table III.

Table II, as the paper prints it for a 224x224x3 input (Keras order: H, W, C)::

    Layer                 Output Shape      Parameters
    Conv2D (32 filters)   (224, 224, 32)           896
    MaxPooling2D          (112, 112, 32)             0
    Conv2D (64 filters)   (112, 112, 64)        18,496
    MaxPooling2D          (56, 56, 64)               0
    Flatten               (200704)                   0
    Dense (128 units)     (128)             25,689,600   <- misprint, see below
    Dense (10 units)      (10)                   1,290

The Dense(128) count is arithmetically wrong in the paper: 200,704 x 128 weights + 128 biases
= 25,690,240. The printed 25,689,600 is 640 short; it equals 200,700 x 128, as if the flatten
size had been rounded and the biases left out. This model has the correct count; the total is
896 + 18,496 + 25,690,240 + 1,290 = 25,710,922.

At 1x28x28 (MNIST) the same layers give the custom MNIST CNN: flatten 64x7x7 = 3136, 421,642
parameters. The flatten size is always derived from ``input_size``, so the model is
``fixed_size``: it accepts exactly the height and width it was built for.

Depth (Table III's "number of layers"): ``blocks`` sets how many conv blocks (conv, ReLU, 2x2
max pool) come before the dense layers. Block ``i`` has ``filters[i]`` channels; blocks beyond
the listed filters double the last one, as Table II doubles 32 to 64, so ``blocks=3`` is
32-64-128 and ``blocks=1`` is 32. Every block halves the image, so an HxW input takes at most
``floor(log2(min(H, W)))`` blocks: 4 at 28x28, 7 at 224x224.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
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
    check_positive_int,
    check_widths,
    default_input_spec,
    init_weights,
    new_head,
    register_model,
)

__all__ = ["PaperCNN", "PaperCNNConfig"]


@dataclass(frozen=True)
class PaperCNNConfig:
    """Hyperparameters of :class:`PaperCNN`; the defaults are Table II."""

    filters: tuple[int, ...] = (32, 64)  # channels of the conv blocks (conv + ReLU + 2x2 max pool)
    blocks: int | None = None  # conv blocks (None: one per filter); extra ones double the last
    kernel_size: int = 3  # odd (3, 5, 7: Table III); "same" padding k // 2 keeps H and W
    hidden: int = 128  # units of the hidden dense layer
    dropout: float = 0.0  # dropout before the output layer (Table II has none)


class PaperCNN(Classifier):
    """``len(filters)`` x (conv, ReLU, 2x2 max pool), flatten, dense + ReLU, dropout, dense.

    ``config.filters`` is the resolved width of every block (the builder turns ``blocks`` into
    it), so ``config.blocks == len(config.filters)`` here.

    ``forward_features`` returns the flattened last feature map ``(N, C * H/2^n * W/2^n)``
    (Table II's Flatten output); ``forward_head`` is the two dense layers.
    """

    fixed_size = True

    def __init__(self, input_spec: InputSpec, num_classes: int, config: PaperCNNConfig) -> None:
        super().__init__(input_spec, num_classes)
        self.config = config
        k = config.kernel_size
        channels, height, width = input_spec.shape
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        for i, out_channels in enumerate(config.filters, start=1):
            blocks[f"conv{i}"] = nn.Conv2d(channels, out_channels, k, padding=k // 2)
            blocks[f"act{i}"] = nn.ReLU()
            blocks[f"pool{i}"] = nn.MaxPool2d(2)  # floor: 7 -> 3
            channels, height, width = out_channels, height // 2, width // 2
        self.features = nn.Sequential(blocks)
        self.flatten = nn.Flatten(1)
        self.num_features = channels * height * width  # 64 * 56 * 56 = 200704 at 224x224
        self.fc1 = nn.Linear(self.num_features, config.hidden)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(config.dropout)
        self.fc2 = nn.Linear(config.hidden, num_classes)
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 64, H/4, W/4) with Table II's two blocks: (B, 64, 7, 7) at 28
        return self.flatten(x)  # (B, 64 * H/4 * W/4) = (B, 3136) at 28x28

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(features)))  # (B, hidden)
        return x if pre_logits else self.fc2(x)  # (B, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc2 = new_head(self.fc2, num_classes)
        self.num_classes = num_classes


def _create(
    name: str, in_channels: int, num_classes: int, input_size: tuple[int, int],
    defaults: PaperCNNConfig, overrides: dict[str, Any],
) -> PaperCNN:
    """Validate the config for model ``name`` and build it.

    Raises:
        ConfigError: unknown or invalid options, explicit ``filters`` longer than ``blocks``,
            or more blocks than the input size takes (the message names the most that fit).
    """
    config = build_config(name, defaults, overrides)
    filters = check_widths(name, "filters", config.filters)
    n = len(filters) if config.blocks is None else check_positive_int(name, "blocks",
                                                                       config.blocks)
    if "filters" in overrides and n < len(filters):
        raise ConfigError(
            f"model {name!r} got filters={list(filters)} ({len(filters)} conv blocks) but "
            f"blocks={n}; give {n} filters, or leave out blocks (it defaults to one per filter)"
        )
    filters = filters[:n] + tuple(filters[-1] * 2**i for i in range(1, n - len(filters) + 1))
    check_kernel_size(name, config.kernel_size)
    check_positive_int(name, "hidden", config.hidden)
    check_dropout(name, config.dropout)
    height, width = input_size
    if min(height, width) < 2**n:
        fit = min(height, width).bit_length() - 1  # floor(log2): the most halvings that leave 1
        fix = (f"at most {fit} block(s) fit. Use blocks <= {fit} (or fewer filters), or larger "
               "images." if fit else "not even one block fits. Use images of at least 2x2.")
        raise ConfigError(
            f"model {name!r} halves the image {n} time(s) (one 2x2 max pool per conv block), "
            f"so input_size must be at least {2**n}x{2**n}; got {height}x{width}, where {fix}"
        )
    config = replace(config, filters=filters, blocks=n)
    return PaperCNN(default_input_spec(in_channels, input_size), num_classes, config)


@register_model(
    "paper-cnn",
    description="The paper's Table II CNN: conv32-pool-conv64-pool-dense128-dense10",
    cheap=True, cam_layer="features",
)
def paper_cnn(
    in_channels: int, num_classes: int, input_size: tuple[int, int], **kwargs: Any
) -> PaperCNN:
    """Table II; kwargs are :class:`PaperCNNConfig` fields (``blocks``, ``kernel_size``,
    ``filters``, ...)."""
    return _create("paper-cnn", in_channels, num_classes, input_size, PaperCNNConfig(), kwargs)


@register_model(
    "paper-cnn-tiny", description="Table II layout with 8/16 filters, 32 hidden", tiny=True,
    cam_layer="features",
)
def paper_cnn_tiny(
    in_channels: int, num_classes: int, input_size: tuple[int, int], **kwargs: Any
) -> PaperCNN:
    """Table II's layout in 27 k parameters (8/16 filters, 32 hidden), for tests."""
    defaults = PaperCNNConfig(filters=(8, 16), hidden=32)
    return _create("paper-cnn-tiny", in_channels, num_classes, input_size, defaults, kwargs)
