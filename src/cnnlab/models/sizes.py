"""Does a model fit its input size? One forward pass of one zero image says, before training.

A convolution whose kernel is larger than the image (``--set model.kernel_size=31`` at
28x28, with "same" padding) trains, but slowly and on mostly padding; a model with more
downsampling than the image has pixels either fails deep in the first batch or pools a 1x1
map into nothing. :func:`check_feature_maps` refuses both with the sizes named: the layer,
its kernel, the feature map it sees, and the smallest input size the model does fit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cnnlab.errors import ConfigError

__all__ = ["check_feature_maps"]

_KERNEL_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d)
_LARGEST_PROBE = 4096  # the search for the smallest size that fits stops here


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[-1])


class _Unfit(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _trace(model: nn.Module, channels: int, height: int, width: int) -> None:
    """One forward pass of a (1, C, H, W) zero image in eval mode, on the model's own device;
    raises :class:`_Unfit` naming the layer that does not fit."""
    current: list[tuple[str, nn.Module, tuple[int, ...]]] = []
    names = {m: n for n, m in model.named_modules()}

    def before(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        shape = tuple(x.shape) if x is not None else ()
        current[:] = [(names.get(module, type(module).__name__), module, shape)]
        if isinstance(module, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d | nn.LPPool2d) \
                and len(shape) == 4:
            kh, kw = _pair(module.kernel_size)
            dh, dw = _pair(getattr(module, "dilation", 1))
            kh, kw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
            if kh > height or kw > width:
                raise _Unfit(f"layer {current[0][0]} ({type(module).__name__}) has a {kh}x{kw} "
                             f"kernel, larger than the {height}x{width} input")

    def after(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.dim() >= 3 and 0 in output.shape[2:]:
            name, _, shape = current[0] if current else ("?", module, ())
            raise _Unfit(f"its feature map shrinks to nothing at layer {name} "
                         f"({type(module).__name__}: {_size(shape)} in, "
                         f"{_size(tuple(output.shape))} out)")

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    handles = []
    for module in model.modules():
        if isinstance(module, _KERNEL_LAYERS) or not any(True for _ in module.children()):
            handles.append(module.register_forward_pre_hook(before))
            handles.append(module.register_forward_hook(after))
    training = model.training
    try:
        model.eval()  # batch-norm statistics stay as they are
        with torch.no_grad():
            model(torch.zeros(1, channels, height, width, device=device))
    except _Unfit:
        raise
    except (RuntimeError, ValueError) as e:
        if not current:
            raise
        name, module, shape = current[0]
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise _Unfit(f"layer {name} ({type(module).__name__}) cannot take its {_size(shape)} "
                     f"feature map ({first})") from e
    finally:
        model.train(training)
        for h in handles:
            h.remove()


def _size(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape[1:]) if len(shape) > 1 else "?"


def _fits(model: nn.Module, channels: int, side: int) -> bool:
    try:
        _trace(model, channels, side, side)
    except _Unfit:
        return False
    return True


def check_feature_maps(model: nn.Module, name: str, channels: int, height: int, width: int,
                       *, rebuild: Callable[[int, int], nn.Module] | None = None) -> None:
    """Refuse a model that does not fit ``channels x height x width`` inputs.

    One forward pass of a zero image, in eval mode and on the model's device (a few
    milliseconds for the models that train at these sizes; a pass on the meta device would
    first import torch's compiler, 3-4 s). Refused: a convolution or pooling kernel larger
    than the input image, and a feature map that shrinks to nothing (or that a layer cannot
    take). The message names the layer and the sizes and, given ``rebuild(height, width)``
    (the same model for another input size, best on the meta device), the smallest square
    input the model fits.

    Raises:
        ConfigError: the model does not fit the input size.
    """
    try:
        _trace(model, channels, height, width)
    except _Unfit as e:
        smallest = _smallest_side(rebuild, channels, max(height, width)) if rebuild else None
        hint = (f"it needs inputs of at least {smallest}x{smallest}: set a larger "
                f"data.image_size, or " if smallest else "") + \
            "choose a smaller kernel_size, fewer stages or another model"
        raise ConfigError(f"model {name!r} does not fit {height}x{width} inputs: {e.message}; "
                          f"{hint}") from None


def _smallest_side(rebuild: Callable[[int, int], nn.Module], channels: int, side: int
                   ) -> int | None:
    """The smallest square side above ``side`` that the model fits (doubling, then
    bisecting), or None below :data:`_LARGEST_PROBE`."""

    def fits(n: int) -> bool:
        try:
            return _fits(rebuild(n, n), channels, n)
        except (ConfigError, NotImplementedError, RuntimeError):  # the builder's own limits
            return False

    hi = side * 2
    while not fits(hi):
        hi *= 2
        if hi > _LARGEST_PROBE:
            return None
    lo = side  # does not fit
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi
