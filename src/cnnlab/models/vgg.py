"""VGG (Simonyan and Zisserman, 2015) without batch norm, in torchvision's layout.

The modules, their indices and so the ``state_dict`` keys and shapes are exactly those of
``torchvision.models.vgg11`` (config "A") and ``vgg16`` (config "D"), so published ImageNet
weights load unchanged for 3-channel input::

    features     per stage: n x (Conv2d(3x3, padding 1), ReLU), then MaxPool2d(2, 2)
                 A (vgg11): 64 | 128 | 256 256 | 512 512 | 512 512        -> features.0 ... 20
                 D (vgg16): 64 64 | 128 128 | 256 256 256 | 512 512 512 | 512 512 512
                                                                          -> features.0 ... 30
    avgpool      AdaptiveAvgPool2d((7, 7))
    classifier   0 Linear(512 * 7 * 7, 4096), 1 ReLU, 2 Dropout, 3 Linear(4096, 4096), 4 ReLU,
                 5 Dropout, 6 Linear(4096, num_classes)

Five 2x2 pools need inputs of at least 32x32 (as torchvision's weights declare). For smaller
images (a 28x28 digit would shrink to 0x0) the **small-input layout** changes only what has
no parameters, so the keys, the weight shapes and the weights that load stay the same: the
last three pools become ``MaxPool2d(3, stride=1, padding=1)``, which keep the size, so 28x28
reaches the average pool as 7x7 and the pool is the identity, as in AlexNet's small-input
layout. It is picked automatically when ``min(H, W) < 32`` (exactly when the standard layout
cannot run) or forced with ``small_input=True/False``; its smallest input is 4x4.

ReLUs are not in-place (no effect on the keys). Convolutions are Kaiming-initialised (as
torchvision does for VGG); the dense layers keep PyTorch's default initialisation like the
other cnnlab families (torchvision draws them from N(0, 0.01)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.base import (
    InputSpec,
    TorchvisionLayoutClassifier,
    build_config,
    check_layout_options,
    default_input_spec,
    init_weights,
    register_model,
)

__all__ = ["VGG", "VGGConfig"]

IMAGENET_MIN_SIZE = 32  # smallest input of the standard layout: five 2x2 pools
SMALL_MIN_SIZE = 4  # smallest input of the small-input layout: two 2x2 pools, 4 -> 2 -> 1
SMALL_HALVING_POOLS = 2  # in the small-input layout only the first two pools halve the size
# torchvision's configs: conv widths, "M" for a 2x2 max pool
CFGS: dict[str, tuple[int | str, ...]] = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),  # vgg11
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),  # vgg13
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
          "M"),  # vgg16
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512,
          512, 512, "M"),  # vgg19
}


@dataclass(frozen=True)
class VGGConfig:
    """Hyperparameters of :class:`VGG`; the defaults are torchvision's vgg11."""

    cfg: str = "A"  # torchvision's layer config: "A" (vgg11), "B" (vgg13), "D" (vgg16), "E" (vgg19)
    width_mult: float = 1.0  # scales the conv widths 64...512; 1.0 for published weights
    hidden: int = 4096  # units of the two hidden dense layers
    dropout: float = 0.5  # after each hidden dense layer (classifier.2 and .5)
    small_input: bool | None = None  # None: small-input layout iff min(H, W) < 32


class VGG(TorchvisionLayoutClassifier):
    """torchvision's VGG (no batch norm) with an optional small-input layout (module docstring).

    ``forward_features`` returns the flattened 7x7 pooled maps ``(N, 512 * 7 * 7)``;
    ``forward_head`` is ``classifier`` (``pre_logits``: its output before ``classifier.6``).
    """

    fixed_size = False

    def __init__(
        self, input_spec: InputSpec, num_classes: int, config: VGGConfig, small_input: bool
    ) -> None:
        super().__init__(input_spec, num_classes)
        self.config = config
        self.small_input = small_input
        self.min_size = SMALL_MIN_SIZE if small_input else IMAGENET_MIN_SIZE
        layers: list[nn.Module] = []
        channels, pools = input_spec.channels, 0
        for item in CFGS[config.cfg]:
            if item == "M":
                if small_input and pools >= SMALL_HALVING_POOLS:
                    layers.append(nn.MaxPool2d(kernel_size=3, stride=1, padding=1))
                else:
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                pools += 1
            else:
                width = max(1, round(int(item) * config.width_mult))
                layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU()]
                channels = width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.num_features = channels * 7 * 7  # 25088 at width_mult=1
        self.classifier = nn.Sequential(
            nn.Linear(self.num_features, config.hidden),  # 0
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.hidden),  # 3
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, num_classes),  # 6
        )
        self.apply(init_weights)


def _create(
    name: str, in_channels: int, num_classes: int, input_size: tuple[int, int],
    defaults: VGGConfig, overrides: dict[str, Any],
) -> VGG:
    """Validate the config for model ``name``, pick the layout and build it.

    Raises:
        ConfigError: unknown or invalid options, or an input too small for the layout.
    """
    config = build_config(name, defaults, overrides)
    if config.cfg not in CFGS:
        raise ConfigError(
            f"The 'cfg' parameter of model {name!r} must be one of {', '.join(CFGS)} "
            f"(torchvision's VGG configs; A is vgg11, D is vgg16). Got {config.cfg!r} instead."
        )
    small = check_layout_options(name, config, input_size, standard_min=IMAGENET_MIN_SIZE,
                                 small_min=SMALL_MIN_SIZE, standard='standard')
    return VGG(default_input_spec(in_channels, input_size), num_classes, config, small)


@register_model(
    "vgg11",
    description="VGG-11 (config A), torchvision layout and keys; small-input layout below 32x32",
    cam_layer="features",
)
def vgg11(in_channels: int, num_classes: int, input_size: tuple[int, int], **kwargs: Any) -> VGG:
    """VGG-11; kwargs are :class:`VGGConfig` fields (``dropout``, ``small_input``, ...)."""
    return _create("vgg11", in_channels, num_classes, input_size, VGGConfig(cfg="A"), kwargs)


@register_model(
    "vgg16",
    description="VGG-16 (config D), torchvision layout and keys; small-input layout below 32x32",
    cam_layer="features",
)
def vgg16(in_channels: int, num_classes: int, input_size: tuple[int, int], **kwargs: Any) -> VGG:
    """VGG-16; kwargs are :class:`VGGConfig` fields (``dropout``, ``small_input``, ...)."""
    return _create("vgg16", in_channels, num_classes, input_size, VGGConfig(cfg="D"), kwargs)


@register_model("vgg-tiny", description="VGG-11 layout at 1/16 width, 32 hidden", tiny=True,
                cam_layer="features")
def vgg_tiny(
    in_channels: int, num_classes: int, input_size: tuple[int, int], **kwargs: Any
) -> VGG:
    """VGG-11's keys at 1/16 of the conv widths (4/8/16/32) and 32 hidden units, for tests."""
    defaults = VGGConfig(cfg="A", width_mult=1 / 16, hidden=32)
    return _create("vgg-tiny", in_channels, num_classes, input_size, defaults, kwargs)
