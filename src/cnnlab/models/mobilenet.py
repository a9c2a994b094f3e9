"""MobileNet- and EfficientNet-style CNNs: depthwise-separable convs, inverted residuals, SE.

The family for small machines: most of the work is in 1x1 convs, and the spatial filtering is
depthwise (one kxk filter per channel, ``groups = channels``), about k^2 times cheaper than a
full conv of the same width. Each stage stacks **inverted residual** blocks (Sandler et al.
2018, MobileNetV2)::

    expand    conv 1x1 (in -> expansion * in) + BN + act    (left out when expansion is 1:
                                                              a depthwise-separable conv)
    depthwise conv kxk, groups = channels, stride s + BN + act
    [SE]      squeeze-and-excitation (Hu et al. 2018): a per-channel gate from the global mean
    project   conv 1x1 (-> out) + BN, no activation (the "linear bottleneck")
    shortcut  + the input, where stride is 1 and in == out

and the network is::

    stem      conv 3x3 (C -> stem_width) + BN + act                 (B, 16, 28, 28)
    stages    len(widths) stages; the first block of stage i has stride strides[i]
    last      conv 1x1 (-> head_width) + BN + act                   (B, 128, 7, 7)
    head      global average pool -> dropout -> linear              (B, num_classes)

``mobilenet`` is MobileNetV2's block (ReLU6, no SE); ``efficientnet`` is EfficientNet's MBConv
(Tan and Le 2019: SiLU, SE at a quarter of the block's input width, a 5x5 depthwise stage).
``width_mult`` scales every width, as MobileNet's alpha. Global average pooling makes the model
accept any input size (``fixed_size = False``; a "same"-padded stride-2 conv maps n >= 1 pixels
to ceil(n / 2), so ``min_size`` is 1). Grad-CAM hooks ``features``, whose output is the last
1x1 conv's map.
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
    check_choice,
    check_dropout,
    check_kernel_size,
    check_number,
    check_positive_int,
    check_widths,
    default_input_spec,
    init_weights,
    register_model,
)

__all__ = ["ACTIVATIONS", "InvertedResidual", "MobileNet", "MobileNetConfig",
           "SqueezeExcite"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu6": nn.ReLU6, "hardswish": nn.Hardswish,
                                           "silu": nn.SiLU}


@dataclass(frozen=True)
class MobileNetConfig:
    """Hyperparameters of :class:`MobileNet`; the defaults are the ``mobilenet`` MNIST model."""

    stem_width: int = 16  # channels of the stem's 3x3 conv
    widths: tuple[int, ...] = (16, 24, 40, 80)  # output channels of each stage
    blocks: tuple[int, ...] = (1, 2, 2, 2)  # inverted residual blocks per stage
    strides: tuple[int, ...] = (1, 2, 2, 1)  # stride (1 or 2) of each stage's first block
    kernel_sizes: tuple[int, ...] = (3, 3, 3, 3)  # odd depthwise kernel of each stage
    kernel_size: int | None = None  # instead of kernel_sizes: this kernel in every stage
    expansion: float = 4.0  # hidden width of a block = expansion * its input width (>= 1);
    # the first stage always uses 1 (a plain depthwise-separable conv), as MobileNetV2
    se_ratio: float = 0.0  # squeeze width = se_ratio * block input width (0: no SE)
    activation: str = "relu6"  # relu6 | hardswish | silu
    head_width: int = 128  # channels of the last 1x1 conv (0: none)
    width_mult: float = 1.0  # scales stem_width, widths and head_width
    dropout: float = 0.1  # before the linear head


def _scaled(channels: int, mult: float) -> int:
    return max(1, round(channels * mult))


class ConvBNAct(nn.Sequential):
    """conv kxk (stride s, groups g, "same" padding) -> BN [-> activation]."""

    def __init__(self, in_channels: int, out_channels: int, k: int, *, stride: int = 1,
                 groups: int = 1, act: type[nn.Module] | None = None) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, k, stride, padding=k // 2, groups=groups,
                           bias=False),
            bn=nn.BatchNorm2d(out_channels))
        if act is not None:
            layers["act"] = act()
        super().__init__(layers)


class SqueezeExcite(nn.Module):
    """Scale each channel by a gate in (0, 1) computed from all channels' global means."""

    def __init__(self, channels: int, squeeze: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = act()
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.act(self.reduce(self.pool(x)))  # (B, squeeze, 1, 1)
        return x * self.gate(self.expand(s))  # (B, C, H, W)


class InvertedResidual(nn.Module):
    """[expand 1x1] -> depthwise kxk -> [SE] -> project 1x1, with a shortcut where shapes match."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, k: int,
                 expansion: float, se_ratio: float, act: type[nn.Module]) -> None:
        super().__init__()
        hidden = _scaled(in_channels, expansion)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if hidden != in_channels:
            layers["expand"] = ConvBNAct(in_channels, hidden, 1, act=act)
        layers["depthwise"] = ConvBNAct(hidden, hidden, k, stride=stride, groups=hidden, act=act)
        if se_ratio > 0:
            layers["se"] = SqueezeExcite(hidden, _scaled(in_channels, se_ratio), act)
        layers["project"] = ConvBNAct(hidden, out_channels, 1)
        self.layers = nn.Sequential(layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(x)  # (B, out, H/s, W/s)
        return x + y if self.residual else y


class MobileNet(PooledClassifier):
    """Stem, stages of inverted residual blocks, a 1x1 conv, global pool, dropout, linear.

    ``forward_features`` returns the pooled features ``(N, head_width)`` (or the last stage's
    width without the 1x1 conv)."""

    fixed_size = False
    min_size = 1

    def __init__(self, input_spec: InputSpec, num_classes: int, config: MobileNetConfig) -> None:
        super().__init__(input_spec, num_classes)
        self.config = config
        act = ACTIVATIONS[config.activation]
        m = config.width_mult
        channels = _scaled(config.stem_width, m)
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            stem=ConvBNAct(input_spec.channels, channels, 3, act=act))
        stages = zip(config.widths, config.blocks, config.strides, config.kernel_sizes,
                     strict=True)
        for i, (width, n, stride, k) in enumerate(stages):
            out = _scaled(width, m)
            blocks = []
            for j in range(n):
                blocks.append(InvertedResidual(
                    channels, out, stride=stride if j == 0 else 1, k=k,
                    expansion=1.0 if i == 0 else config.expansion, se_ratio=config.se_ratio,
                    act=act))
                channels = out
            layers[f"stage{i + 1}"] = nn.Sequential(*blocks)
        if config.head_width:
            head = _scaled(config.head_width, m)
            layers["last"] = ConvBNAct(channels, head, 1, act=act)
            channels = head
        self.features = nn.Sequential(layers)
        # features (B, 128, 7, 7) for `mobilenet` at 28x28, pooled to (B, 128)
        self._pooled_head(channels, num_classes, config.dropout)
        self.apply(init_weights)


def _create(name: str, in_channels: int, num_classes: int, input_size: tuple[int, int],
            defaults: MobileNetConfig, overrides: dict[str, Any]) -> MobileNet:
    """Validate the config for model ``name`` and build it.

    Raises:
        ConfigError: unknown or invalid options, per-stage lists of different lengths.
    """
    config = build_config(name, defaults, overrides)
    check_positive_int(name, "stem_width", config.stem_width)
    widths = check_widths(name, "widths", config.widths)
    blocks = check_widths(name, "blocks", config.blocks)
    strides = tuple(config.strides) if isinstance(config.strides, tuple | list) else ()
    if not strides or any(s not in (1, 2) or isinstance(s, bool) for s in strides):
        raise ConfigError(f"The 'strides' parameter of model {name!r} must be a sequence of "
                          f"1s and 2s, one per stage. Got {config.strides!r} instead.")
    if config.kernel_size is not None:
        if "kernel_sizes" in overrides:
            raise ConfigError(f"model {name!r} got both 'kernel_size' and 'kernel_sizes'; give "
                              "one of them (kernel_size=k means k in every stage)")
        kernels = (check_kernel_size(name, config.kernel_size),) * len(widths)
    else:
        kernels = check_widths(name, "kernel_sizes", config.kernel_sizes)
        for k in kernels:
            check_kernel_size(name, k)
    lengths = {"widths": len(widths), "blocks": len(blocks), "strides": len(strides),
               "kernel_sizes": len(kernels)}
    if len(set(lengths.values())) != 1:
        raise ConfigError(f"model {name!r} needs one entry per stage in widths, blocks, strides "
                          f"and kernel_sizes; got {lengths}.")
    check_number(name, "expansion", config.expansion, low=1.0, high=16.0)
    check_number(name, "se_ratio", config.se_ratio, low=0.0, high=1.0)
    check_choice(name, "activation", config.activation, tuple(ACTIVATIONS))
    head = config.head_width
    if isinstance(head, bool) or not isinstance(head, int) or head < 0:
        raise ConfigError(f"The 'head_width' parameter of model {name!r} must be an int >= 0 "
                          f"(0: no last 1x1 conv). Got {head!r} instead.")
    check_number(name, "width_mult", config.width_mult, low=0.0, high=16.0, low_open=True)
    check_dropout(name, config.dropout)
    config = replace(config, widths=widths, blocks=blocks, strides=strides, kernel_sizes=kernels)
    return MobileNet(default_input_spec(in_channels, input_size), num_classes, config)


@register_model("mobilenet", description="MobileNetV2-style: inverted residuals, depthwise "
                                         "convs, ReLU6, widths 16-80", cam_layer="features")
def mobilenet(in_channels: int, num_classes: int, input_size: tuple[int, int],
              **kwargs: Any) -> MobileNet:
    """The MNIST default (0.12 M parameters, 8.3 M MACs at 28x28); kwargs are
    :class:`MobileNetConfig` fields (``widths``, ``expansion``, ``se_ratio``, ...)."""
    return _create("mobilenet", in_channels, num_classes, input_size, MobileNetConfig(), kwargs)


_EFFICIENT = MobileNetConfig(kernel_sizes=(3, 3, 5, 3), se_ratio=0.25, activation="silu")


@register_model("efficientnet", description="EfficientNet-style MBConv: SiLU, squeeze-and-"
                                            "excitation, a 5x5 depthwise stage",
                cam_layer="features")
def efficientnet(in_channels: int, num_classes: int, input_size: tuple[int, int],
                 **kwargs: Any) -> MobileNet:
    """``mobilenet`` with EfficientNet-B0's block: SiLU, SE 0.25, a 5x5 stage."""
    return _create("efficientnet", in_channels, num_classes, input_size, _EFFICIENT, kwargs)


@register_model("mobilenet-tiny", description="Two-stage 8/16-wide MobileNetV2 for tests",
                tiny=True, cam_layer="features")
def mobilenet_tiny(in_channels: int, num_classes: int, input_size: tuple[int, int],
                   **kwargs: Any) -> MobileNet:
    """A depthwise-separable block, a strided and a residual inverted block, for tests."""
    defaults = MobileNetConfig(stem_width=8, widths=(8, 16), blocks=(1, 2), strides=(1, 2),
                               kernel_sizes=(3, 3), head_width=32)
    return _create("mobilenet-tiny", in_channels, num_classes, input_size, defaults, kwargs)


@register_model("efficientnet-tiny", description="Two-stage 8/16-wide EfficientNet (SE, SiLU) "
                                                 "for tests", tiny=True, cam_layer="features")
def efficientnet_tiny(in_channels: int, num_classes: int, input_size: tuple[int, int],
                      **kwargs: Any) -> MobileNet:
    """``mobilenet-tiny`` with squeeze-and-excitation, SiLU and a 5x5 stage, for tests."""
    defaults = replace(_EFFICIENT, stem_width=8, widths=(8, 16), blocks=(1, 2), strides=(1, 2),
                       kernel_sizes=(3, 5), head_width=32)
    return _create("efficientnet-tiny", in_channels, num_classes, input_size, defaults, kwargs)
