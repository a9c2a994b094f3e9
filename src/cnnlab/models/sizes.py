"""Does a model fit its input size? One forward pass on the meta device says, before training.

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
    """One meta forward pass of a (1, C, H, W) input; raises :class:`_Unfit` with the layer
    that does not fit (None when every layer does, or the model cannot run on meta)."""
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

    handles = []
    for module in model.modules():
        if isinstance(module, _KERNEL_LAYERS) or not any(True for _ in module.children()):
            handles.append(module.register_forward_pre_hook(before))
            handles.append(module.register_forward_hook(after))
    try:
        with torch.no_grad():
            model(torch.empty(1, channels, height, width, device="meta"))
    except _Unfit:
        raise
    except (RuntimeError, ValueError) as e:
        if not current:
            return
        name, module, shape = current[0]
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if "meta" in first.lower() or "not implemented" in first.lower():
            return  # an operator without a meta kernel: nothing to say about sizes
        raise _Unfit(f"layer {name} ({type(module).__name__}) cannot take its {_size(shape)} "
                     f"feature map ({first})") from e
    except NotImplementedError:
        return
    finally:
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


def check_feature_maps(make_model: Callable[[int, int], nn.Module], name: str, channels: int,
                       height: int, width: int) -> None:
    """Refuse a model that does not fit ``channels x height x width`` inputs.

    ``make_model(height, width)`` builds the model for that input size on the meta device
    (builders derive their flatten sizes from it). Refused: a convolution or pooling kernel
    larger than the input image, and a feature map that shrinks to nothing (or that a layer
    cannot take). The message names the layer and the sizes, and the smallest square input
    the model fits.

    Raises:
        ConfigError: the model does not fit the input size.
    """
    try:
        _trace(make_model(height, width), channels, height, width)
    except _Unfit as e:
        side = max(height, width)
        smallest = None
        while side < _LARGEST_PROBE:
            side *= 2
            try:
                if _fits(make_model(side, side), channels, side):
                    lo, hi = max(height, width), side
                    while lo + 1 < hi:  # the smallest side in (lo, hi] that fits
                        mid = (lo + hi) // 2
                        try:
                            ok = _fits(make_model(mid, mid), channels, mid)
                        except ConfigError:
                            ok = False
                        lo, hi = (lo, mid) if ok else (mid, hi)
                    smallest = hi
                    break
            except ConfigError:
                continue
        hint = (f"it needs inputs of at least {smallest}x{smallest}: set a larger "
                f"data.image_size, or " if smallest else "") + \
            "choose a smaller kernel_size, fewer stages or another model"
        raise ConfigError(f"model {name!r} does not fit {height}x{width} inputs: {e.message}; "
                          f"{hint}") from None
