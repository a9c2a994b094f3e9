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

It is also the family the search spaces of ``cnnlab tune`` work on, so it exposes the knobs a
search turns: ``depth`` (weighted layers: the convs plus the linear head, spread over the
stages, later stages first: depth 5 -> 1/1/2 convs, 10 -> 3/3/3, 15 -> 4/5/5), ``width``
(channels of the first stage, doubled per stage), ``kernel_size``, ``residual`` (a skip
connection around every conv after the stem; a 1x1 projection where the width changes),
``batch_norm`` and ``dropout``. ``pool_first`` pools right after each pooled stage's conv,
before its BN and ReLU, which then see a quarter of the pixels. ``crop`` makes the network look
at the centred ``crop x crop`` square of its input only (the model still takes the full input,
so every command feeds it the same images).
"""

from __future__ import annotations

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
    check_positive_int,
    check_widths,
    default_input_spec,
    init_weights,
    new_head,
    register_model,
)

__all__ = ["ConvBlock", "ConvNet", "ConvNetConfig", "convs_for_depth"]


@dataclass(frozen=True)
class ConvNetConfig:
    """Hyperparameters of :class:`ConvNet`; the defaults are the ``convnet`` model."""

    widths: tuple[int, ...] = (16, 32, 64)  # channels of each stage
    pools: tuple[bool, ...] = (True, True, False)  # a 2x2 max pool after each stage
    kernel_size: int = 3  # odd; every conv, "same" padding
    dropout: float = 0.0  # before the linear head
    depth: int | None = None  # convs + 1 (the head); None = one conv per stage
    width: int | None = None  # instead of widths: width, 2 * width, 4 * width, ...
    residual: bool = False  # skip connections around every conv after the stem
    batch_norm: bool = True  # BN after every conv (without it the convs get a bias)
    # pool right after the conv, before BN and ReLU (as the fast CIFAR-10 nets of hlb-cifar10
    # and airbench do): BN and ReLU then see a quarter of the pixels (bench_recipe_search.py)
    pool_first: bool = False
    # the side of the centred square the convs see; 0 = the whole input. MNIST-form digits
    # fill a centred 20x20 box, so a 24x24 crop drops a border that is almost always blank and
    # with it 27 % of every layer's pixels (bench_recipe_search.py, the `fast` search's round 3)
    crop: int = 0


class ConvBlock(nn.Module):
    """conv kxk -> BN -> (+ shortcut) -> ReLU -> optional 2x2 max pool; with ``pool_first``
    conv kxk -> pool -> BN -> (+ pooled shortcut) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, k: int, *, batch_norm: bool,
                 residual: bool, pool: bool, pool_first: bool = False) -> None:
        super().__init__()
        self.pool_first = pool_first and pool
        self.conv = nn.Conv2d(in_channels, out_channels, k, padding=k // 2, bias=not batch_norm)
        self.bn = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.shortcut: nn.Module | None = None
        if residual:
            self.shortcut = (nn.Identity() if in_channels == out_channels
                             else nn.Conv2d(in_channels, out_channels, 1, bias=False))
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2) if pool else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_first:
            assert self.pool is not None
            y = self.bn(self.pool(self.conv(x)))
            if self.shortcut is not None:
                y = y + self.pool(self.shortcut(x))
            return self.act(y)
        y = self.bn(self.conv(x))
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        y = self.act(y)
        return self.pool(y) if self.pool is not None else y


def convs_for_depth(depth: int, stages: int) -> tuple[int, ...]:
    """Convs per stage for ``depth = sum(convs) + 1``, extra convs on the later stages.

    Raises:
        ConfigError: ``depth`` too small to give every stage one conv.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < stages + 1:
        raise ConfigError(
            f"The 'depth' parameter of a {stages}-stage convnet must be an int >= {stages + 1} "
            f"(depth = number of convs + 1 for the head, at least one conv per stage). "
            f"Got {depth!r} instead."
        )
    convs = depth - 1
    base, extra = divmod(convs, stages)
    return tuple(base + (1 if i >= stages - extra else 0) for i in range(stages))


class ConvNet(Classifier):
    """Conv-BN-ReLU stages with optional pooling and skips, then flatten, dropout, linear.

    ``forward_features`` returns the flattened last feature map ``(N, C * H * W)``.
    """

    fixed_size = True

    def __init__(self, input_spec: InputSpec, num_classes: int, config: ConvNetConfig) -> None:
        super().__init__(input_spec, num_classes)
        self.config = config
        stages = len(config.widths)
        per_stage = (convs_for_depth(config.depth, stages) if config.depth is not None
                     else (1,) * stages)
        layers: list[nn.Module] = []
        in_channels, h, w = input_spec.channels, input_spec.height, input_spec.width
        self.crop_box: tuple[int, int, int] | None = None
        if config.crop:
            if config.crop > min(h, w):
                raise ConfigError(
                    f"The 'crop' parameter of model 'convnet' must be at most the input's "
                    f"smaller side ({min(h, w)} for {h}x{w} inputs). Got {config.crop!r} "
                    "instead; use 0 for no crop."
                )
            self.crop_box = ((h - config.crop) // 2, (w - config.crop) // 2, config.crop)
            h = w = config.crop
        for width, pool, n in zip(config.widths, config.pools, per_stage, strict=True):
            for i in range(n):
                last = i == n - 1
                layers.append(ConvBlock(in_channels, width, config.kernel_size,
                                        batch_norm=config.batch_norm,
                                        residual=config.residual and bool(layers),
                                        pool=pool and last, pool_first=config.pool_first))
                in_channels = width
            if pool:
                h, w = h // 2, w // 2
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
        if self.crop_box is not None:
            top, left, side = self.crop_box
            x = x[:, :, top:top + side, left:left + side]  # (B, C, crop, crop)
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
    if config.width is not None:
        if "widths" in overrides:
            raise ConfigError(
                f"model {name!r} got both 'width' and 'widths'; give one of them "
                "(width=w means widths w, 2w, 4w, ...)"
            )
        base = check_positive_int(name, "width", config.width)
        widths = tuple(base * 2**i for i in range(len(defaults.widths)))
    else:
        widths = check_widths(name, "widths", config.widths)
    pools = tuple(config.pools)
    if len(pools) != len(widths) or not all(isinstance(p, bool) for p in pools):
        raise ConfigError(
            f"The 'pools' parameter of model {name!r} must hold one true/false per width "
            f"({len(widths)}). Got {config.pools!r} instead."
        )
    check_kernel_size(name, config.kernel_size)
    check_dropout(name, config.dropout)
    if config.depth is not None:
        convs_for_depth(config.depth, len(widths))
    if isinstance(config.crop, bool) or not isinstance(config.crop, int) or config.crop < 0:
        raise ConfigError(
            f"The 'crop' parameter of model {name!r} must be an int >= 0 (the side of the "
            f"centred square the convs see; 0 = the whole input). Got {config.crop!r} instead."
        )
    for flag in ("residual", "batch_norm", "pool_first"):
        if not isinstance(getattr(config, flag), bool):
            raise ConfigError(
                f"The {flag!r} parameter of model {name!r} must be true or false. "
                f"Got {getattr(config, flag)!r} instead."
            )
    config = ConvNetConfig(widths=widths, pools=pools, kernel_size=config.kernel_size,
                           dropout=config.dropout, depth=config.depth, width=config.width,
                           residual=config.residual, batch_norm=config.batch_norm,
                           pool_first=config.pool_first, crop=config.crop)
    return ConvNet(default_input_spec(in_channels, input_size), num_classes, config)


@register_model("convnet", description="Plain conv-BN net 16/32/64 of the fast recipe",
                cheap=True, cam_layer="features")
def convnet(in_channels: int, num_classes: int, input_size: tuple[int, int],
            **kwargs: Any) -> ConvNet:
    """The fast recipe's model (about 55 k parameters at 28x28); kwargs are
    :class:`ConvNetConfig` fields (``depth``, ``width``, ``kernel_size``, ``residual``, ...)."""
    return _create("convnet", in_channels, num_classes, input_size, ConvNetConfig(), kwargs)
