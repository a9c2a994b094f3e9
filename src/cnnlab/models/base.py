"""The interface every cnnlab model follows, and the model registry.

A model is an ``nn.Module`` whose ``forward(x)`` returns logits of shape ``(N, num_classes)``
for a float input ``(N, C, H, W)`` that is already normalised with ``input_spec.mean/std``.
It splits into ``forward_features`` (the backbone) and ``forward_head`` (the classifier), can
swap its classifier with ``reset_classifier`` and describes the input it expects in
``input_spec``. Builders are registered in :data:`MODELS` and called through
:func:`create_model`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeGuard, TypeVar

import torch
from torch import nn

from cnnlab.errors import ConfigError, ShapeError, close_names
from cnnlab.registry import Registry

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "MODELS",
    "Classifier",
    "InputSpec",
    "PooledClassifier",
    "build_config",
    "check_bool",
    "check_choice",
    "check_dropout",
    "check_input_shape",
    "check_kernel_size",
    "check_number",
    "check_positive_int",
    "check_widths",
    "create_model",
    "default_input_spec",
    "init_weights",
    "list_models",
    "new_head",
    "register_model",
]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: channels, height, width, and the normalisation of [0, 1] pixels."""

    channels: int
    height: int
    width: int
    mean: tuple[float, ...] = (MNIST_MEAN,)
    std: tuple[float, ...] = (MNIST_STD,)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        return cls(
            int(d["channels"]), int(d["height"]), int(d["width"]),
            tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]),
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def shape_str(self) -> str:
        return f"{self.channels}x{self.height}x{self.width}"


def default_input_spec(channels: int, size: tuple[int, int]) -> InputSpec:
    """The input spec a builder uses when nothing better is known.

    Normalisation: MNIST statistics for 1 channel, ImageNet statistics for 3 channels (what
    published RGB weights expect), 0.5/0.5 per channel otherwise. Training replaces them with
    the dataset's own statistics when it computes them.
    """
    mean: tuple[float, ...]
    std: tuple[float, ...]
    if channels == 1:
        mean, std = (MNIST_MEAN,), (MNIST_STD,)
    elif channels == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = (0.5,) * channels, (0.5,) * channels
    return InputSpec(channels, size[0], size[1], mean, std)


class Classifier(nn.Module):
    """Base class: subclasses set ``input_spec``/``num_classes`` and define the three hooks.

    ``fixed_size``: True when the model only accepts exactly ``input_spec``'s height and width
    (a flatten layer sized from them); False when adaptive pooling accepts any size of at least
    ``min_size`` (a subclass may set ``min_size`` per instance when it depends on the config).
    ``num_features``: the width D of ``forward_features``' output ``(N, D)``.
    """

    fixed_size: bool = True
    min_size: int = 1
    num_features: int = 0

    def __init__(self, input_spec: InputSpec, num_classes: int) -> None:
        super().__init__()
        self.input_spec = input_spec
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits ``(N, num_classes)`` from ``forward_features``' output.

        ``pre_logits=True`` stops before the last layer and returns the penultimate
        activations (what ``reset_classifier`` keeps), e.g. for embeddings.
        """
        raise NotImplementedError

    def reset_classifier(self, num_classes: int) -> None:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`ShapeError` naming the expected shape when ``x`` does not fit.

        Raises:
            ShapeError: wrong rank, channel count or spatial size.
        """
        check_input_shape(x, self.input_spec, name=type(self).__name__,
                          fixed_size=self.fixed_size, min_size=self.min_size)


def check_input_shape(x: torch.Tensor, spec: InputSpec, *, name: str, fixed_size: bool,
                      min_size: int) -> None:
    """:meth:`Classifier.check_input` for any module that knows its ``spec``, ``fixed_size``
    and ``min_size`` (a wrapper such as the INT8 engine's, which is not a Classifier).

    Raises:
        ShapeError: wrong rank, channel count or spatial size; the message names ``name``.
    """
    if x.dim() != 4:
        raise ShapeError(
            f"{name} expects a batch of shape (N, {spec.channels}, {spec.height}, "
            f"{spec.width}); got a tensor of shape {tuple(x.shape)}. "
            "Add a batch dimension with x.unsqueeze(0) for a single image."
        )
    _, c, h, w = x.shape
    if c != spec.channels:
        raise ShapeError(
            f"{name} expects {spec.channels} input channel(s), shape (N, {spec.channels}, "
            f"{spec.height}, {spec.width}); got {c} in shape {tuple(x.shape)}."
        )
    if fixed_size and (h, w) != (spec.height, spec.width):
        raise ShapeError(
            f"{name} was built for {spec.height}x{spec.width} inputs, shape (N, {c}, "
            f"{spec.height}, {spec.width}); got {h}x{w}. Resize the images or create the "
            f"model with input_size=({h}, {w})."
        )
    if not fixed_size and min(h, w) < min_size:
        raise ShapeError(
            f"{name} needs inputs of at least {min_size}x{min_size}; "
            f"got {h}x{w} in shape {tuple(x.shape)}."
        )


# ---- helpers shared by the model families -----------------------------------------------------

C = TypeVar("C", bound="DataclassInstance")


class TorchvisionLayoutClassifier(Classifier):
    """``features`` -> ``avgpool`` -> flatten -> ``classifier`` whose last module (index 6) is
    the head, as in torchvision's AlexNet and VGG (whose keys their subclasses keep).

    ``forward_features`` returns the flattened pooled map; ``forward_head(pre_logits=True)``
    returns the input of the head (the second 4096-wide dense layer's output)."""

    features: nn.Sequential
    avgpool: nn.Module
    classifier: nn.Sequential

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.features(x)), 1)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return self.classifier[:-1](features)
        return self.classifier(features)

    def reset_classifier(self, num_classes: int) -> None:
        head = self.classifier[6]
        assert isinstance(head, nn.Linear)  # every subclass builds its head there
        self.classifier[6] = new_head(head, num_classes)  # same key
        self.num_classes = num_classes


class PooledClassifier(Classifier):
    """``features`` -> global average pool -> dropout -> ``fc``: the head of the densenet,
    inception and mobilenet families. A subclass builds ``features`` and calls
    :meth:`_pooled_head` with the channels it ends with."""

    features: nn.Module

    def _pooled_head(self, channels: int, num_classes: int, dropout: float) -> None:
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.num_features = channels
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool(self.features(x)))  # (B, num_features)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(features)
        return x if pre_logits else self.fc(x)  # (B, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = new_head(self.fc, num_classes)
        self.num_classes = num_classes


def build_config(model: str, defaults: C, overrides: Mapping[str, Any]) -> C:
    """``defaults`` (a dataclass) with ``overrides`` applied; lists become tuples (from TOML).

    Raises:
        ConfigError: a key that is not a field of the config, with a close match if there is one.
    """
    known = [f.name for f in dataclasses.fields(defaults)]
    for key in overrides:
        if key not in known:
            close = close_names(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"model {model!r} got an unknown keyword argument {key!r}{hint} "
                f"(it takes: {', '.join(known)})"
            )
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return dataclasses.replace(defaults, **values)


def init_weights(module: nn.Module) -> None:
    """The initialisation every family uses (apply with ``model.apply(init_weights)``).

    Convolutions: Kaiming normal for ReLU (fan_out, as torchvision's ResNet), bias 0.
    Batch norm: weight 1, bias 0. Linear layers keep PyTorch's default
    (uniform in +-1/sqrt(fan_in)), as torchvision's ResNet and AlexNet do.
    """
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)



def check_kernel_size(model: str, kernel_size: object) -> int:
    """Return ``kernel_size`` if it is an odd int >= 1 (so "same" padding is ``k // 2``).

    Raises:
        ConfigError: otherwise.
    """
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 \
            or kernel_size % 2 == 0:
        raise ConfigError(
            f"The 'kernel_size' parameter of model {model!r} must be an odd int >= 1 "
            f"(e.g. 3, 5 or 7). Got {kernel_size!r} instead."
        )
    return kernel_size


def check_dropout(model: str, dropout: object, name: str = "dropout") -> float:
    """Return ``dropout`` as a float if it lies in [0, 1).

    Raises:
        ConfigError: otherwise.
    """
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) \
            or not 0.0 <= dropout < 1.0:
        raise ConfigError(
            f"The {name!r} parameter of model {model!r} must be a float in [0, 1). "
            f"Got {dropout!r} instead."
        )
    return float(dropout)


def check_choice(model: str, name: str, value: object, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``.

    Raises:
        ConfigError: otherwise.
    """
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(
            f"The {name!r} parameter of model {model!r} must be one of "
            f"{', '.join(map(repr, choices))}. Got {value!r} instead."
        )
    return value


def check_bool(model: str, name: str, value: object) -> bool:
    """Return ``value`` if it is true or false.

    Raises:
        ConfigError: otherwise.
    """
    if not isinstance(value, bool):
        raise ConfigError(
            f"The {name!r} parameter of model {model!r} must be true or false. "
            f"Got {value!r} instead."
        )
    return value


def check_number(model: str, name: str, value: object, *, low: float, high: float,
                 low_open: bool = False) -> float:
    """Return ``value`` as a float if it is a finite number in ``[low, high]`` (``(low, high]``
    with ``low_open``).

    Raises:
        ConfigError: otherwise.
    """
    ok = (isinstance(value, int | float) and not isinstance(value, bool)
          and math.isfinite(value) and (value > low if low_open else value >= low)
          and value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ConfigError(
            f"The {name!r} parameter of model {model!r} must be a number in {interval}. "
            f"Got {value!r} instead."
        )
    return float(value)  # type: ignore[arg-type]


def _positive_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_positive_int(model: str, name: str, value: object) -> int:
    """Return ``value`` if it is an int >= 1.

    Raises:
        ConfigError: otherwise.
    """
    if not _positive_int(value):
        raise ConfigError(
            f"The {name!r} parameter of model {model!r} must be an int >= 1. "
            f"Got {value!r} instead."
        )
    return value


def check_widths(model: str, name: str, values: object) -> tuple[int, ...]:
    """Return ``values`` as a tuple if it is a non-empty sequence of ints >= 1.

    Raises:
        ConfigError: otherwise.
    """
    if not (isinstance(values, tuple | list) and values and all(map(_positive_int, values))):
        raise ConfigError(
            f"The {name!r} parameter of model {model!r} must be a non-empty sequence of "
            f"ints >= 1. Got {values!r} instead."
        )
    return tuple(values)


def check_layout_options(name: str, config: Any, input_size: tuple[int, int], *,
                         standard_min: int, small_min: int, standard: str = "standard") -> bool:
    """Check the options torchvision-layout families share (``width_mult``, ``hidden``,
    ``dropout``, ``small_input``) and the input size; return whether to use the small-input
    layout (automatic below ``standard_min``, or as ``config.small_input`` says).

    Raises:
        ConfigError: an invalid option, or an input too small for the layout.
    """
    mult = config.width_mult
    if isinstance(mult, bool) or not isinstance(mult, int | float) or not mult > 0:
        raise ConfigError(
            f"The 'width_mult' parameter of model {name!r} must be a number > 0. "
            f"Got {mult!r} instead."
        )
    check_positive_int(name, "hidden", config.hidden)
    check_dropout(name, config.dropout)
    if config.small_input not in (None, True, False):
        raise ConfigError(
            f"The 'small_input' parameter of model {name!r} must be true, false or None "
            f"(automatic). Got {config.small_input!r} instead."
        )
    side = min(input_size)
    small = side < standard_min if config.small_input is None else bool(config.small_input)
    smallest = small_min if small else standard_min
    if side < smallest:
        raise ConfigError(
            f"model {name!r} in the {'small-input' if small else standard} layout needs "
            f"input_size of at least {smallest}x{smallest}; got {input_size[0]}x{input_size[1]}."
            + ("" if small else " Use small_input=True (or leave it unset) for small images.")
        )
    return small


def new_head(old: nn.Linear, num_classes: int) -> nn.Linear:
    """A fresh output layer replacing ``old`` for ``num_classes``, on its device and dtype."""
    return nn.Linear(old.in_features, num_classes, device=old.weight.device,
                     dtype=old.weight.dtype)


Builder = Callable[..., Classifier]
MODELS: Registry[Builder] = Registry("model")


def register_model(name: str, *, description: str = "", tiny: bool = False, **tags: Any):
    """Register a builder ``f(in_channels, num_classes, input_size, **kw) -> Classifier``.

    ``tiny=True`` marks a small variant meant for tests (hidden by :func:`list_models`).
    ``cheap=True`` marks a full model cheap enough at 1x28x28 for the test suite to exercise
    as it is (tests run every ``tiny`` or ``cheap`` model).
    ``cam_layer`` (every family declares it; tests/models/test_cam_layer_contract.py checks):
    the dotted path, inside the built Classifier, of the module whose output Grad-CAM hooks
    (the last convolutional stage, e.g. ``"features"``), or ``None`` for a model without one
    (``cnnlab explain`` then offers the gradient methods only).
    """
    return MODELS.register(name, description=description, tiny=tiny, **tags)


def _size_pair(input_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(input_size, int):
        return (input_size, input_size)
    if len(input_size) == 2:
        return (int(input_size[0]), int(input_size[1]))
    raise ConfigError(f"input_size must be an int or (height, width); got {input_size!r}")


def create_model(
    name: str,
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    input_size: int | tuple[int, int] = 28,
    **kwargs: Any,
) -> Classifier:
    """Build the registered model ``name``.

    Raises:
        RegistryError: unknown ``name`` (with "did you mean").
        ConfigError: invalid sizes or keyword arguments the model does not take.
    """
    builder = MODELS.get(name)
    if in_channels < 1 or num_classes < 2:
        raise ConfigError(
            f"model {name!r} needs in_channels >= 1 and num_classes >= 2; "
            f"got in_channels={in_channels}, num_classes={num_classes}"
        )
    size = _size_pair(input_size)
    try:
        return builder(in_channels=in_channels, num_classes=num_classes, input_size=size, **kwargs)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise ConfigError(f"model {name!r}: {e}") from e
        raise


def list_models(include_tiny: bool = False) -> list[str]:
    """Registered model names, without the tiny test variants unless asked."""
    return [e.name for e in MODELS if include_tiny or not e.tags.get("tiny")]
