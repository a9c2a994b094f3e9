"""A Keras-like layer table for a model: output shape, parameters and MACs of every leaf module.

::

    >>> s = summarize(create_model("paper-cnn", in_channels=3, input_size=224))
    >>> print(format_summary(s))        # or print(s)
    >>> json.dumps(s.to_dict())

One forward pass of a batch of one zero image, in eval mode and without gradients, with a
forward hook on every leaf module (a module without children) records the rows in execution
order. A module called twice gives two rows; its parameters are counted in the first.

Conventions:

* Output shapes exclude the batch dimension and keep PyTorch's order: ``(C, H, W)`` for
  feature maps (Keras prints ``(H, W, C)``), ``(D,)`` for vectors.
* MACs are multiply-accumulates per sample (one image). Conv: ``output elements x in_channels
  / groups x kernel area``; transposed conv: ``input elements x out_channels / groups x kernel
  area``; Linear: ``output elements x in_features``; a module with a ``count_macs(inputs,
  output)`` method (the attention product of ``vit``) says its own. Biases, batch norm,
  pooling, activations and dropout count 0: they are additions, comparisons or per-element
  scalings, and batch norm folds into the preceding conv at inference. FLOPs are about 2 x MACs.
* Totals come from ``model.parameters()`` (shared parameters once, unused modules included),
  so they hold even for parameters that no row shows. Batch-norm running statistics are
  buffers, not parameters (Keras counts them as non-trainable parameters).
* Parameter size is in MB = 10^6 bytes, at each parameter's own dtype (4 bytes for float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnlab.errors import ConfigError, ShapeError
from cnnlab.models.base import Classifier

__all__ = ["LayerSummary", "ModelSummary", "format_summary", "summarize"]


@dataclass(frozen=True)
class LayerSummary:
    """One row: a leaf module's call during the summary's forward pass."""

    name: str  # qualified module name, e.g. "features.conv1"
    type: str  # class name, e.g. "Conv2d"
    output_shape: tuple[int, ...] | None  # without the batch dimension; None if not a tensor
    params: int  # parameters the module owns (0 on a repeated call)
    trainable_params: int  # of which require grad
    macs: int  # multiply-accumulates per sample

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "output_shape": None if self.output_shape is None else list(self.output_shape),
            "params": self.params,
            "trainable_params": self.trainable_params,
            "macs": self.macs,
        }


@dataclass(frozen=True)
class ModelSummary:
    """The layer table and totals of one model at one input shape."""

    model: str  # the model's class name
    input_shape: tuple[int, int, int]  # (C, H, W), without the batch dimension
    output_shape: tuple[int, ...] | None  # the model output without the batch dimension
    layers: tuple[LayerSummary, ...]
    total_params: int
    trainable_params: int
    total_macs: int  # per sample
    param_bytes: int

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    @property
    def param_mb(self) -> float:
        """Parameter size in MB (10^6 bytes)."""
        return self.param_bytes / 1e6

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists instead of tuples)."""
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "output_shape": None if self.output_shape is None else list(self.output_shape),
            "layers": [layer.to_dict() for layer in self.layers],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "total_macs": self.total_macs,
            "param_bytes": self.param_bytes,
            "param_mb": round(self.param_mb, 6),
        }

    def __str__(self) -> str:
        return format_summary(self)


def summarize(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
) -> ModelSummary:
    """Run one ``(1, C, H, W)`` zero image through ``model`` and tabulate its leaf modules.

    ``input_shape`` is ``(C, H, W)``; None takes ``model.input_spec.shape`` (cnnlab models).
    The model must already be on ``device``. Its train/eval mode is restored afterwards.

    Raises:
        ShapeError: ``input_shape`` is not three ints >= 1, or the model rejects it.
        ConfigError: no ``input_shape`` for a model without ``input_spec``, or the model's
            parameters are on another device.
    """
    shape = _input_shape(model, input_shape)
    dev = torch.device(device)
    params = list(model.parameters())
    for p in params:
        if p.device.type != dev.type or (dev.index is not None and p.device.index != dev.index):
            raise ConfigError(
                f"summarize: the model's parameters are on {p.device} but device={str(dev)!r}; "
                f"move the model with model.to({str(dev)!r}) or pass device={str(p.device)!r}."
            )
    dtype = next((p.dtype for p in params if p.is_floating_point()), torch.float32)

    rows: list[LayerSummary] = []
    seen: set[int] = set()

    def hook(name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def record(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            own = [] if id(module) in seen else list(module.parameters(recurse=False))
            seen.add(id(module))
            rows.append(LayerSummary(
                name=name,
                type=type(module).__name__,
                output_shape=_shape(output),
                params=sum(p.numel() for p in own),
                trainable_params=sum(p.numel() for p in own if p.requires_grad),
                macs=_macs(module, inputs, output),
            ))
        return record

    leaves = [(n, m) for n, m in model.named_modules() if n and not any(m.children())]
    if not leaves:  # a single-layer model is its own leaf
        leaves = [(type(model).__name__, model)]
    handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            output = model(torch.zeros((1, *shape), dtype=dtype, device=dev))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    unique = {id(p): p for p in params}.values()
    return ModelSummary(
        model=type(model).__name__,
        input_shape=shape,
        output_shape=_shape(output),
        layers=tuple(rows),
        total_params=sum(p.numel() for p in unique),
        trainable_params=sum(p.numel() for p in unique if p.requires_grad),
        total_macs=sum(r.macs for r in rows),
        param_bytes=sum(p.numel() * p.element_size() for p in unique),
    )


def format_summary(summary: ModelSummary) -> str:
    """The summary as a Keras-like text table with totals underneath."""
    header = ("Layer (type)", "Output Shape", "Param #", "MACs")
    body = [
        (
            f"{r.name} ({r.type})",
            "?" if r.output_shape is None else _shape_str(r.output_shape),
            f"{r.params:,}",
            f"{r.macs:,}",
        )
        for r in summary.layers
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(4)]

    def line(cells: Sequence[str]) -> str:
        return (
            f"{cells[0]:<{widths[0]}}  {cells[1]:<{widths[1]}}  "
            f"{cells[2]:>{widths[2]}}  {cells[3]:>{widths[3]}}"
        ).rstrip()

    rule = "=" * len(line(["x" * w for w in widths]))
    out = [
        f'Model: "{summary.model}"   input (C, H, W): {_shape_str(summary.input_shape)}',
        rule, line(header), rule, *(line(row) for row in body), rule,
        f"Total params: {summary.total_params:,}",
        f"Trainable params: {summary.trainable_params:,}",
        f"Non-trainable params: {summary.non_trainable_params:,}",
        f"Total MACs per sample: {summary.total_macs:,} ({_si(summary.total_macs)})",
        f"Params size: {summary.param_mb:.2f} MB (10^6 bytes)",
        "Output shapes exclude the batch dimension; feature maps are (C, H, W).",
    ]
    return "\n".join(out)


def _input_shape(model: nn.Module, input_shape: Sequence[int] | None) -> tuple[int, int, int]:
    if input_shape is None:
        if isinstance(model, Classifier):
            return model.input_spec.shape
        raise ConfigError(
            f"summarize needs input_shape=(C, H, W) for {type(model).__name__}, "
            "which has no input_spec."
        )
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape
    ):
        raise ShapeError(
            "The 'input_shape' parameter of summarize must be (C, H, W), three ints >= 1 "
            f"without the batch dimension. Got {input_shape!r} instead."
        )
    return shape


def _shape(output: Any) -> tuple[int, ...] | None:
    """Shape without the batch dimension of a tensor, or of the first tensor of a tuple/list."""
    if isinstance(output, tuple | list) and output:
        output = output[0]
    return tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else None


def _macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    """Multiply-accumulates per sample of one call (see the module docstring)."""
    if not isinstance(output, torch.Tensor) or output.dim() == 0:
        return 0
    count = getattr(module, "count_macs", None)
    if callable(count):  # a parameter-free module doing real work (vit.Attend's q k^T, ... v)
        return int(count(inputs, output))
    batch = output.shape[0]
    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return output.numel() // batch * per_output
    if isinstance(module, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d):
        per_input = module.out_channels // module.groups * math.prod(module.kernel_size)
        return inputs[0].numel() // batch * per_input
    if isinstance(module, nn.Linear):
        return output.numel() // batch * module.in_features
    return 0


def _shape_str(shape: tuple[int, ...]) -> str:
    return f"({shape[0]},)" if len(shape) == 1 else str(tuple(shape))


def _si(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)
