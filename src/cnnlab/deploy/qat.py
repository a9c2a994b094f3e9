"""Quantisation-aware training (QAT): fine-tune a classifier under simulated INT8 arithmetic.

Static INT8 quantisation rounds every weight and activation to 256 levels after training, and
a model whose weights or activations are sensitive to that rounding loses accuracy. QAT
fine-tunes the float model with the rounding simulated in the forward pass, so the weights
move to values that survive it; ONNX Runtime's static quantiser is then applied to the
fine-tuned float model exactly as for ``--method static``.

The simulation matches what :func:`cnnlab.deploy.quantize.quantize_model` asks ONNX Runtime for
(QDQ, U8S8, per-channel weights):

* the weight of every ``Conv2d`` and ``Linear`` is fake-quantised per output channel,
  symmetric int8 in [-q, q] with ``scale = max|w| / q``, recomputed at every step: ``q = 64``
  for the reduced (7-bit) weight range ``quantize_model`` writes by default, 127 for the full
  one (``weight_qmax``). Batch
  norm is folded into the preceding convolution by ONNX Runtime, which scales each output
  channel by a constant; per-channel symmetric rounding commutes with that scaling, so
  quantising the unfolded weight is exact.
* activations are fake-quantised per tensor, asymmetric uint8, with a range that includes 0
  (as ONNX Runtime's calibration does), taken from min/max observers: the global min/max of a
  float calibration pass to start, then an exponential moving average of each batch's. The
  quantised tensors are the model's input and the outputs of convolutions, linear layers,
  batch norms, activations and average pools -- except an output consumed by a batch norm
  (folded into the convolution) or by a ReLU-like activation (ONNX Runtime drops the ReLU and
  quantises the producer with the ReLU's range), as the exported graph has no such tensor.

Gradients pass the rounding by the straight-through estimator of PyTorch's core
``torch.fake_quantize_per_*_affine`` ops (``torch.ao.quantization`` is not used: it is
deprecated). Batch norm statistics stay frozen (eval mode) during QAT: fine-tuning batches
are small and the folded scale must not drift from what the weights were tuned for.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from cnnlab.errors import ConfigError

__all__ = ["FakeQuantizer", "default_qat_lr", "fake_quantized", "qat_finetune"]

_WEIGHTED = (nn.Conv2d, nn.Linear)
# activations whose ONNX node the quantiser removes, quantising the producer with their range
_FUSED_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh)
_ACTIVATIONS = (*_FUSED_ACTIVATIONS, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish,
                nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.PReLU)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_POOLS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)  # averages need a range of their own
_OBSERVED = (*_WEIGHTED, *_NORMS, *_ACTIVATIONS, *_POOLS)


class _WeightFakeQuant(nn.Module):
    """Per-output-channel symmetric int8 fake quantisation of a weight (a parametrisation)
    to the levels [-qmax, qmax]."""

    def __init__(self, qmax: int = 127) -> None:
        super().__init__()
        self.qmax = qmax

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        q = self.qmax
        scale = w.detach().abs().amax(dim=tuple(range(1, w.dim()))).clamp_min(1e-12) / q
        zero = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
        return torch.fake_quantize_per_channel_affine(w, scale.float(), zero, 0, -q, q)


class _Observer:
    """The range of one activation tensor: calibrated min/max, then an EMA of batch min/max."""

    def __init__(self, momentum: float) -> None:
        self.momentum = momentum
        self.lo: float | None = None
        self.hi: float | None = None

    def calibrate(self, x: torch.Tensor) -> None:
        lo, hi = float(x.detach().amin()), float(x.detach().amax())
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)

    def update(self, x: torch.Tensor) -> None:
        if self.lo is None or self.hi is None:
            self.calibrate(x)
            return
        m = self.momentum
        self.lo += m * (float(x.detach().amin()) - self.lo)
        self.hi += m * (float(x.detach().amax()) - self.hi)

    def qparams(self) -> tuple[float, int]:
        """Scale and zero point of uint8 over the range widened to include 0, as ONNX
        Runtime computes them."""
        lo, hi = min(self.lo or 0.0, 0.0), max(self.hi or 0.0, 0.0)
        scale = (hi - lo) / 255 if hi > lo else 1.0
        return scale, int(min(255, max(0, round(-lo / scale))))


class FakeQuantizer:
    """Simulated INT8 inference installed on a module (parametrisations and forward hooks).

    ``mode`` is ``"calibrate"`` (float forward, observers take the global min/max),
    ``"train"`` (observers follow an EMA, outputs fake-quantised) or ``"eval"`` (observers
    frozen, outputs fake-quantised). :meth:`remove` restores the plain module: the same
    parameters (with whatever values training gave them), the same ``state_dict`` keys, no
    hooks.
    """

    def __init__(self, module: nn.Module, example: torch.Tensor, *,
                 momentum: float = 0.1, weight_qmax: int = 127) -> None:
        self.module = module
        self.mode = "calibrate"
        self.points = self._plan(module, example)
        self.observers = {name: _Observer(momentum) for name in ["<input>", *self.points]}
        self._handles: list[Any] = []
        self._weighted = [m for m in module.modules() if isinstance(m, _WEIGHTED)]
        try:
            for m in self._weighted:
                parametrize.register_parametrization(m, "weight", _WeightFakeQuant(weight_qmax))
            self._handles.append(module.register_forward_pre_hook(self._input_hook))
            for name, m in module.named_modules():
                if name in self.points:
                    self._handles.append(m.register_forward_hook(self._output_hook(name)))
        except BaseException:
            self.remove()
            raise

    @staticmethod
    def _plan(module: nn.Module, example: torch.Tensor) -> list[str]:
        """The modules whose output is a quantised tensor in the exported INT8 graph, found by
        following which module consumes which output in one float forward pass."""
        calls: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []
        handles = []

        def record(name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
            def hook(m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
                if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                    calls.append((name, m, args[0], out))  # kept alive: identities stay unique
            return hook

        for name, m in module.named_modules():
            if name and isinstance(m, _OBSERVED):
                handles.append(m.register_forward_hook(record(name)))
        was_training = module.training
        try:
            module.eval()
            with torch.no_grad():
                module(example)
        finally:
            for h in handles:
                h.remove()
            module.train(was_training)
        points: list[str] = []
        for i, (name, m, _, out) in enumerate(calls):
            consumers = [c for c in calls[i + 1:] if c[2] is out]
            folded = any(isinstance(c[1], _NORMS) for c in consumers) and isinstance(m, _WEIGHTED)
            fused = any(isinstance(c[1], _FUSED_ACTIVATIONS) for c in consumers)
            if not (folded or fused) and name not in points:
                points.append(name)
        return points

    def _fake_quant(self, name: str, x: torch.Tensor) -> torch.Tensor:
        obs = self.observers[name]
        if self.mode == "calibrate":
            obs.calibrate(x)
            return x
        if self.mode == "train":
            obs.update(x)
        scale, zero = obs.qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)

    def _input_hook(self, m: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (self._fake_quant("<input>", args[0]), *args[1:])

    def _output_hook(self, name: str
                     ) -> Callable[[nn.Module, tuple[Any, ...], torch.Tensor], torch.Tensor]:
        def hook(m: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
            return self._fake_quant(name, out)
        return hook

    def remove(self) -> None:
        """Take the simulation off the module, keeping the trained float weights."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for m in self._weighted:
            if parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)


@contextmanager
def fake_quantized(module: nn.Module, calibration: torch.Tensor, *, batch_size: int = 128,
                   momentum: float = 0.1, weight_qmax: int = 127) -> Iterator[FakeQuantizer]:
    """``module`` with simulated INT8 inference while the block runs, observers calibrated on
    ``calibration`` (normalised float inputs); the simulation starts in ``eval`` mode."""
    fq = FakeQuantizer(module, calibration[:1], momentum=momentum, weight_qmax=weight_qmax)
    try:
        was_training = module.training
        module.eval()
        with torch.no_grad():
            for i in range(0, len(calibration), batch_size):
                module(calibration[i:i + batch_size])
        module.train(was_training)
        fq.mode = "eval"
        yield fq
    finally:
        fq.remove()


def default_qat_lr(config: dict[str, Any]) -> float:
    """A tenth of the training run's peak learning rate, or 1e-4 when it is not recorded."""
    lr = (config.get("optim") or {}).get("lr")
    return float(lr) / 10 if isinstance(lr, int | float) and lr > 0 else 1e-4


def qat_finetune(model: Any, images: torch.Tensor, targets: torch.Tensor, *, epochs: int = 1,
                 lr: float | None = None, batch_size: int = 128, seed: int = 0,
                 calibration: int = 512, progress: bool = False,
                 weight_qmax: int = 127) -> nn.Module:
    """Fine-tune a copy of ``model.classifier`` (``model`` a :class:`cnnlab.inference.Model`) with
    simulated INT8 quantisation and return it as the plain float module.

    ``images`` are uint8 (N, C, H, W), normalised with the model's training mean and std;
    ``targets`` their class indices. Adam with cross-entropy, ``lr`` by default a tenth of the
    run's peak learning rate (:func:`default_qat_lr`), decayed to 0 along a cosine over the
    steps (the last steps settle the weights that get exported); batch norm frozen. The
    activation observers are calibrated on the first ``calibration`` images first. Weights are
    rounded to the levels [-``weight_qmax``, ``weight_qmax``] (64 for a reduced-range file).

    Raises:
        ConfigError: ``epochs`` < 1, no images, or images and targets of different lengths.
    """
    from cnnlab.data.transforms import normalize
    from cnnlab.progress import Progress

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"quantisation-aware training needs epochs >= 1; got {epochs!r}")
    if len(images) == 0 or len(images) != len(targets):
        raise ConfigError(f"quantisation-aware training needs training images with targets; "
                          f"got {len(images)} images and {len(targets)} targets")
    lr = default_qat_lr(model.config) if lr is None else float(lr)
    if not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"the QAT learning rate must be > 0; got {lr!r}")
    spec = model.input_spec
    net: nn.Module = copy.deepcopy(model.classifier).cpu().float()
    targets = torch.as_tensor(targets, dtype=torch.long)
    calib = normalize(images[:max(1, calibration)], spec.mean, spec.std)
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * math.ceil(len(images) / batch_size)
    with fake_quantized(net, calib, batch_size=batch_size, weight_qmax=weight_qmax) as fq:
        net.train()
        for m in net.modules():
            if isinstance(m, _NORMS):
                m.eval()  # frozen statistics
        fq.mode = "train"
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
        with Progress(len(images) * epochs, "QAT", "img", enabled=progress) as bar:
            for _ in range(epochs):
                order = torch.randperm(len(images), generator=gen)
                for i in range(0, len(images), batch_size):
                    idx = order[i:i + batch_size]
                    x = normalize(images[idx], spec.mean, spec.std)
                    loss = F.cross_entropy(net(x), targets[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    bar.update(len(idx), postfix=f"loss {loss.item():.4f}")
    # a fresh copy of the source architecture holding the trained weights: the state_dict's
    # key order (removing a parametrisation re-registers the weight last) and the module
    # classes are exactly the source's
    plain: nn.Module = copy.deepcopy(model.classifier).cpu().float()
    plain.load_state_dict(net.state_dict())
    return plain.eval()
