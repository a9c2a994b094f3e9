"""PyTorch's own static INT8 quantisation for x86 CPUs (FX graph mode, x86/FBGEMM kernels).

The model is traced with ``torch.fx``, conv/BN/ReLU patterns are fused, observers record the
activation ranges on calibration images, and ``convert_fx`` swaps in quantised modules
(``torch.ao.nn.quantized``) with per-channel INT8 weights and UINT8 activations, run by the
``x86`` quantised engine. The result is an ordinary ``nn.Module`` that takes the same
normalised float input as the model and returns float logits, so ``cnnlab bench`` can time
it next to eager PyTorch and ONNX Runtime's INT8 path without a file format in between.

A cnnlab :class:`~cnnlab.models.Classifier` checks its input's shape in ``forward`` with
Python ``if``s on ``x.shape``, which FX cannot trace; so the copy that is traced skips that
check, and the quantised graph is wrapped in :class:`Int8Classifier`, which runs the same
check before the INT8 graph. Models whose computation has data-dependent control flow cannot
be FX-traced at all; they raise :class:`~cnnlab.errors.ExportError` saying so.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.errors import ExportError
from cnnlab.models.base import Classifier, InputSpec, check_input_shape

__all__ = ["BACKEND", "Int8Classifier", "normalise_images", "quantize_torch"]

BACKEND = "x86"  # FBGEMM + oneDNN kernels; the recommended quantised engine for x86 servers

_CALIBRATION_BATCH = 64


def normalise_images(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
                     ) -> torch.Tensor:
    """uint8 images (N, C, H, W) as the float, normalised input a cnnlab model was trained on."""
    m = torch.tensor(tuple(mean), dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(tuple(std), dtype=torch.float32).view(1, -1, 1, 1)
    return (images.float() / 255 - m) / s


class Int8Classifier(nn.Module):
    """A quantised graph behind the shape check of the :class:`Classifier` it was made from.

    Keeps ``input_spec``, ``num_classes``, ``fixed_size`` and ``min_size``, so a wrong input
    raises the same :class:`~cnnlab.errors.ShapeError` as the float model instead of failing
    deep inside a quantised kernel.
    """

    def __init__(self, quantized: nn.Module, source: Classifier) -> None:
        super().__init__()
        self.quantized = quantized
        self.input_spec: InputSpec = source.input_spec
        self.num_classes = source.num_classes
        self.fixed_size = source.fixed_size
        self.min_size = source.min_size

    def check_input(self, x: torch.Tensor) -> None:
        """The float model's shape check (:meth:`Classifier.check_input`).

        Raises:
            ShapeError: wrong rank, channel count or spatial size.
        """
        check_input_shape(x, self.input_spec, name=type(self).__name__,
                          fixed_size=self.fixed_size, min_size=self.min_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.quantized(x)


def _describe(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


def quantize_torch(model: nn.Module, calibration_images: torch.Tensor) -> nn.Module:
    """A static INT8 copy of ``model`` for PyTorch's x86 quantised engine.

    ``calibration_images`` are the inputs the observers see: uint8 images (N, C, H, W) are
    scaled to [0, 1] and normalised with ``model.input_spec`` (what cnnlab models are trained
    on); float images are taken as already normalised. ``model`` itself is left unchanged.
    Sets ``torch.backends.quantized.engine`` to ``"x86"`` for the process, since the
    quantised modules run on whichever engine is current when they are called.

    Raises:
        ExportError: no calibration images, the x86 engine is missing from this PyTorch
            build, or the model cannot be FX-traced or quantised (the cause is named).
    """
    name = type(model).__name__
    if calibration_images.ndim != 4 or len(calibration_images) == 0:
        raise ExportError(f"static INT8 quantisation of {name} needs calibration images "
                          f"(N, C, H, W) with N >= 1; got shape "
                          f"{tuple(calibration_images.shape)}")
    if BACKEND not in torch.backends.quantized.supported_engines:
        raise ExportError(f"this PyTorch build has no {BACKEND!r} quantised engine (it has "
                          f"{', '.join(torch.backends.quantized.supported_engines)})")
    if calibration_images.dtype == torch.uint8:
        spec = getattr(model, "input_spec", None)
        if spec is None:
            raise ExportError(f"uint8 calibration images need {name}.input_spec to normalise "
                              "them; pass normalised float images instead")
        calib = normalise_images(calibration_images, spec.mean, spec.std)
    else:
        calib = calibration_images.float()
    torch.backends.quantized.engine = BACKEND
    float_model = copy.deepcopy(model).eval()
    if isinstance(float_model, Classifier):
        # the shape check branches on x.shape, which FX cannot trace; Int8Classifier runs it.
        # Replacing the method on this one traced copy is deliberate, hence the ignore.
        float_model.check_input = lambda x: None  # type: ignore[method-assign]
    # torch.ao.quantization is deprecated in favour of torchao (PT2E) in PyTorch 2.13 and warns
    # on every call; the FX path still works and is what this engine measures. Ignore the
    # warnings here, where they are expected, so that they do not turn into test errors.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        try:
            prepared = prepare_fx(float_model, get_default_qconfig_mapping(BACKEND),
                                  example_inputs=(calib[:1],))
        except torch.fx.proxy.TraceError as e:
            raise ExportError(f"{name} cannot be FX-traced for PyTorch INT8 quantisation "
                              f"({_describe(e)}): its forward branches on tensor values or "
                              "shapes, which symbolic tracing cannot follow") from e
        except Exception as e:
            raise ExportError(f"PyTorch could not prepare {name} for INT8 quantisation "
                              f"({_describe(e)})") from e
        try:
            for i in range(0, len(calib), _CALIBRATION_BATCH):
                prepared(calib[i:i + _CALIBRATION_BATCH])
            quantized = convert_fx(prepared)
            quantized(calib[:1])  # fail here, not on the first real call
        except Exception as e:
            raise ExportError(f"PyTorch could not quantise {name} to INT8 "
                              f"({_describe(e)})") from e
    if isinstance(model, Classifier):
        return Int8Classifier(quantized, model).eval()
    return quantized.eval()
