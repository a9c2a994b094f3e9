"""AlexNet (Krizhevsky, Sutskever and Hinton, 2012) in torchvision's layout.

The modules, their indices and so the ``state_dict`` keys and shapes are exactly those of
``torchvision.models.alexnet`` (the one-tower variant of "One weird trick", Krizhevsky 2014), so
published ImageNet weights load unchanged for 3-channel input::

    features.0   Conv2d(C, 64, 11, stride 4, padding 2)     features.1  ReLU
    features.2   MaxPool2d(3, stride 2)
    features.3   Conv2d(64, 192, 5, padding 2)              features.4  ReLU
    features.5   MaxPool2d(3, stride 2)
    features.6   Conv2d(192, 384, 3, padding 1)             features.7  ReLU
    features.8   Conv2d(384, 256, 3, padding 1)             features.9  ReLU
    features.10  Conv2d(256, 256, 3, padding 1)             features.11 ReLU
    features.12  MaxPool2d(3, stride 2)
    avgpool      AdaptiveAvgPool2d((6, 6))
    classifier   0 Dropout, 1 Linear(9216, 4096), 2 ReLU, 3 Dropout, 4 Linear(4096, 4096),
                 5 ReLU, 6 Linear(4096, num_classes)

That layout needs inputs of at least 63x63 (as torchvision's weights declare): a 28x28 digit
would vanish after the stride-4 stem and the three 3x3/2 pools. For small inputs the
**small-input layout** changes only what has no parameters, so keys and weight shapes stay
identical and the same weights load in both layouts:

    features.0   stride 1, padding 5 ("same" for 11x11)     28x28 -> 28x28
    features.2   MaxPool2d(2)                               28 -> 14
    features.5   MaxPool2d(2)                               14 -> 7
    features.12  MaxPool2d(2, stride 1)                     7 -> 6, so avgpool is the identity

It is picked automatically when ``min(H, W) < 63`` (exactly when torchvision's layout cannot
run) or forced with ``small_input=True/False``. Its smallest input is 8x8. At 1x28x28 it costs
about 226 M multiply-accumulates per image, a third of the ImageNet layout at 224x224.

The model is not ``fixed_size``: the adaptive pool accepts any size of at least ``min_size``
(63 or 8). ReLUs are not in-place (no effect on the keys; hooks and attribution methods see
every activation). Convolutions are Kaiming-initialised; torchvision uses PyTorch defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from cnnlab.models.base import (
    InputSpec,
    TorchvisionLayoutClassifier,
    build_config,
    check_layout_options,
    default_input_spec,
    init_weights,
    register_model,
)

__all__ = ["AlexNet", "AlexNetConfig"]

IMAGENET_MIN_SIZE = 63  # smallest input of the ImageNet layout (torchvision's weights meta)
SMALL_MIN_SIZE = 8  # smallest input of the small-input layout: three pools need 8 -> 4 -> 2 -> 1
_CHANNELS = (64, 192, 384, 256, 256)  # conv widths at width_mult=1


@dataclass(frozen=True)
class AlexNetConfig:
    """Hyperparameters of :class:`AlexNet`; the defaults are torchvision's."""

    width_mult: float = 1.0  # scales the conv widths 64/192/384/256/256; 1.0 for published weights
    hidden: int = 4096  # units of the two hidden dense layers
    dropout: float = 0.5  # before each hidden dense layer (classifier.0 and .3)
    small_input: bool | None = None  # None: small-input layout iff min(H, W) < 63


class AlexNet(TorchvisionLayoutClassifier):
    """torchvision's AlexNet with an optional small-input layout (see the module docstring).

    ``forward_features`` returns the flattened 6x6 pooled maps ``(N, 256 * 6 * 6)``;
    ``forward_head`` is ``classifier`` (``pre_logits``: its output before ``classifier.6``).
    """

    fixed_size = False

    def __init__(
        self, input_spec: InputSpec, num_classes: int, config: AlexNetConfig, small_input: bool
    ) -> None:
        super().__init__(input_spec, num_classes)
        self.config = config
        self.small_input = small_input
        self.min_size = SMALL_MIN_SIZE if small_input else IMAGENET_MIN_SIZE
        c1, c2, c3, c4, c5 = (max(1, round(c * config.width_mult)) for c in _CHANNELS)
        if small_input:
            stem = nn.Conv2d(input_spec.channels, c1, kernel_size=11, stride=1, padding=5)
            pool1, pool2 = nn.MaxPool2d(2), nn.MaxPool2d(2)
            pool3 = nn.MaxPool2d(2, stride=1)
        else:
            stem = nn.Conv2d(input_spec.channels, c1, kernel_size=11, stride=4, padding=2)
            pool1, pool2, pool3 = (nn.MaxPool2d(kernel_size=3, stride=2) for _ in range(3))
        self.features = nn.Sequential(
            stem,  # 0
            nn.ReLU(),
            pool1,
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),  # 3
            nn.ReLU(),
            pool2,
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),  # 6
            nn.ReLU(),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),  # 8
            nn.ReLU(),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1),  # 10
            nn.ReLU(),
            pool3,  # 12
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.num_features = c5 * 6 * 6  # 9216 at width_mult=1
        self.classifier = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(self.num_features, config.hidden),  # 1
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.hidden),  # 4
            nn.ReLU(),
            nn.Linear(config.hidden, num_classes),  # 6
        )
        self.apply(init_weights)


def _create(
    name: str, in_channels: int, num_classes: int, input_size: tuple[int, int],
    defaults: AlexNetConfig, overrides: dict[str, Any],
) -> AlexNet:
    """Validate the config for model ``name``, pick the layout and build it.

    Raises:
        ConfigError: unknown or invalid options, or an input too small for the layout.
    """
    config = build_config(name, defaults, overrides)
    small = check_layout_options(name, config, input_size, standard_min=IMAGENET_MIN_SIZE,
                                 small_min=SMALL_MIN_SIZE, standard='ImageNet')
    return AlexNet(default_input_spec(in_channels, input_size), num_classes, config, small)


@register_model(
    "alexnet",
    description="AlexNet, torchvision layout and keys; stride-1 small-input layout below 63x63",
    cam_layer="features",
)
def alexnet(
    in_channels: int, num_classes: int, input_size: tuple[int, int], **kwargs: Any
) -> AlexNet:
    """AlexNet; kwargs are :class:`AlexNetConfig` fields (``dropout``, ``small_input``, ...)."""
    return _create("alexnet", in_channels, num_classes, input_size, AlexNetConfig(), kwargs)


@register_model("alexnet-tiny", description="AlexNet layout at 1/16 width, 32 hidden", tiny=True,
                cam_layer="features")
def alexnet_tiny(
    in_channels: int, num_classes: int, input_size: tuple[int, int], **kwargs: Any
) -> AlexNet:
    """AlexNet's keys at 1/16 of the conv widths (4/12/24/16/16) and 32 hidden units, for tests."""
    defaults = AlexNetConfig(width_mult=1 / 16, hidden=32)
    return _create("alexnet-tiny", in_channels, num_classes, input_size, defaults, kwargs)
