"""Attributions on Captum: which input pixels a prediction rests on.

:class:`Explainer` wraps a trained classifier and the Grad-CAM layer its family declares in the
model registry (``@register_model(..., cam_layer=...)``) and computes, for uint8 images in the
model's input form ``(N, C, H, W)``, one of :data:`METHODS`:

- ``gradcam``: Grad-CAM (Selvaraju et al. 2017) on the declared layer, upsampled to the input;
- ``ig``: integrated gradients (Sundararajan et al. 2017) from a black image;
- ``saliency``: the absolute input gradient (Simonyan et al. 2014);
- ``occlusion``: the drop in the target's logit when a small black patch covers each place;
- ``guided-gradcam``: guided backpropagation times Grad-CAM.

Every method returns float32 attributions of the input's shape ``(N, C, H, W)``: Grad-CAM's
map, which locates evidence rather than weighing channels, is the same in every channel.
:func:`heatmap` sums them over channels to the ``(N, H, W)`` map overlays and metrics use.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.data.transforms import normalize
from cnnlab.errors import ConfigError, unknown_name
from cnnlab.models import MODELS, Classifier

__all__ = ["CAM_METHODS", "METHODS", "Explainer", "cam_layer_of", "check_method", "heatmap"]


def _cam_on_input(cam: torch.Tensor, x: torch.Tensor, model: torch.nn.Module,
                  mode: str = "bilinear") -> torch.Tensor:
    """A Grad-CAM map ``(B, 1, h, w)`` upsampled onto the input ``x`` ``(B, C, H, W)``: over the
    whole image, or, for a model that looks at a centred crop only (``crop_box``: top, left,
    side), over the crop, zero outside it."""
    from captum import attr  # type: ignore[import-untyped]

    box = getattr(model, "crop_box", None)
    if box is None:
        return attr.LayerAttribution.interpolate(cam, tuple(x.shape[2:]), mode)
    top, left, side = box
    out = cam.new_zeros((cam.shape[0], 1, *x.shape[2:]))
    out[:, :, top:top + side, left:left + side] = attr.LayerAttribution.interpolate(
        cam, (side, side), mode)
    return out

METHODS = ("gradcam", "ig", "saliency", "occlusion", "guided-gradcam")
#: the methods that hook the declared Grad-CAM layer
CAM_METHODS = ("gradcam", "guided-gradcam")
# integrated gradients' Riemann steps: half of Captum's default 50 and of the 32 first tried,
# for the score card's budget of 1,000 images in 5 minutes (benchmarks/bench_explain.py)
IG_STEPS = 16


def cam_layer_of(model_name: str) -> str | None:
    """The Grad-CAM layer the registered model ``model_name`` declares (``None``: it has none).

    Raises:
        RegistryError: an unknown model name.
        ConfigError: a model registered without a ``cam_layer`` declaration.
    """
    entry = MODELS.entry(model_name)
    if "cam_layer" not in entry.tags:
        raise ConfigError(
            f"model {model_name!r} does not declare its Grad-CAM layer; register it with "
            f"cam_layer='<module path>' or cam_layer=None. Use one of "
            f"{', '.join(m for m in METHODS if m not in CAM_METHODS)} meanwhile.")
    layer = entry.tags["cam_layer"]
    return None if layer is None else str(layer)


def check_method(method: str, cam_layer: str | None = "", model_name: str = "this model") -> str:
    """``method`` if it is known and the model can run it.

    Args:
        cam_layer: the model's Grad-CAM layer; ``None`` when it declares none (then the
            Grad-CAM methods are refused). The default ``""`` checks the name only.

    Raises:
        ConfigError: an unknown method (with "did you mean"), or a Grad-CAM method for a
            model without a Grad-CAM layer (naming the methods that work).
    """
    if method not in METHODS:
        raise ConfigError(unknown_name("explanation method", method, METHODS))
    if method in CAM_METHODS and cam_layer is None:
        works = [m for m in METHODS if m not in CAM_METHODS]
        raise ConfigError(
            f"{method} needs a convolutional layer to hook, and {model_name} declares none "
            f"(cam_layer=None in its registration); use {', '.join(works)}")
    return method


def heatmap(attributions: np.ndarray) -> np.ndarray:
    """Per-pixel attribution ``(N, H, W)``: ``(N, C, H, W)`` summed over channels."""
    return np.asarray(attributions, dtype=np.float32).sum(axis=1)


class Explainer:
    """Attributions of one trained classifier (see the module docstring).

    Captum hooks the model's modules while it computes, so one explainer computes one batch at
    a time (a lock serialises callers: a service's concurrent requests are safe).
    """

    def __init__(self, classifier: Classifier, *, cam_layer: str | None,
                 model_name: str = "this model") -> None:
        self.classifier = classifier.eval()
        self.cam_layer = cam_layer
        self.model_name = model_name
        self.spec = classifier.input_spec
        self.lock = threading.Lock()
        self._layer: nn.Module | None = None
        if cam_layer is not None:
            try:
                self._layer = classifier.get_submodule(cam_layer)
            except AttributeError as e:
                raise ConfigError(
                    f"{model_name} declares cam_layer={cam_layer!r}, which is no module of "
                    f"{type(classifier).__name__}: {e}") from e

    @classmethod
    def for_model(cls, model: Any) -> Explainer:
        """The explainer of a loaded :class:`cnnlab.inference.Model` (its classifier on
        PyTorch, whatever engine predicts), with its family's declared Grad-CAM layer.

        Raises:
            ConfigError: the checkpoint does not name a registered model family.
        """
        name = str((model.config.get("model") or {}).get("name") or "")
        if not name:
            raise ConfigError(f"{model.path or 'the model'}: its config does not name the model "
                              "family, so its Grad-CAM layer is unknown; retrain or re-save it")
        return cls(model.classifier, cam_layer=cam_layer_of(name), model_name=f"model {name!r}")

    @property
    def methods(self) -> list[str]:
        """The methods this model can run."""
        return [m for m in METHODS if self._layer is not None or m not in CAM_METHODS]

    # --- inputs ---------------------------------------------------------------------------
    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, C, H, W)`` as the float input the classifier takes."""
        return normalize(images, self.spec.mean, self.spec.std)

    def black(self, like: torch.Tensor) -> torch.Tensor:
        """A black image (pixel 0) in normalised form, shaped like ``like``: the baseline of
        integrated gradients and occlusion, and what deletion puts in place of a pixel."""
        mean = torch.tensor(self.spec.mean, dtype=like.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.spec.std, dtype=like.dtype).view(1, -1, 1, 1)
        return ((0.0 - mean) / std).expand_as(like).contiguous()

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
        """Class probabilities ``(N, K)`` for uint8 images."""
        out = [torch.softmax(self.classifier(self.normalise(images[i:i + batch_size])), 1)
               for i in range(0, len(images), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.classifier.num_classes))

    # --- attributions -----------------------------------------------------------------------
    def attribute(self, images: torch.Tensor | np.ndarray, targets: Sequence[int] | np.ndarray
                  | torch.Tensor | None = None, method: str = "gradcam", *,
                  batch_size: int = 100) -> np.ndarray:
        """Attributions ``(N, C, H, W)`` (float32) of ``targets`` (default: the predicted
        classes) for uint8 ``images`` ``(N, C, H, W)`` in the model's input form.

        Raises:
            ConfigError: an unknown method, a Grad-CAM method the model cannot run, or a
                target outside the classes.
            ShapeError: images of another shape than the model takes.
        """
        check_method(method, self.cam_layer, self.model_name)
        x_all = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images)
        if x_all.dim() == 3:
            x_all = x_all.unsqueeze(0)
        self.classifier.check_input(x_all.float())
        if targets is None:
            t_all = torch.as_tensor(self.predict(x_all).argmax(1), dtype=torch.long)
        else:
            t_all = torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(-1)
        k = self.classifier.num_classes
        if len(t_all) != len(x_all) or (len(t_all) and (t_all.min() < 0 or t_all.max() >= k)):
            raise ConfigError(f"explanation targets must be one class index in 0..{k - 1} per "
                              f"image; got {t_all.tolist()[:10]} for {len(x_all)} image(s)")
        parts = []
        with self.lock:
            for i in range(0, len(x_all), batch_size):
                parts.append(self._attribute(self.normalise(x_all[i:i + batch_size]),
                                             t_all[i:i + batch_size], method))
        if not parts:
            return np.zeros(tuple(x_all.shape), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor, method: str) -> np.ndarray:
        from captum import attr

        model = self.classifier
        x = x.clone().requires_grad_(True)  # Captum warns when it has to set this itself
        target = targets.tolist()
        if method == "gradcam":
            cam = attr.LayerGradCam(model, self._layer).attribute(
                x, target=target, relu_attributions=True)  # (B, 1, h, w)
            out = _cam_on_input(cam, x, model).expand_as(x)  # the same place in every channel
        elif method == "guided-gradcam":
            with warnings.catch_warnings():  # Captum announces its ReLU hooks on every call
                warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
                if getattr(model, "crop_box", None) is None:
                    out = attr.GuidedGradCam(model, self._layer).attribute(x, target=target)
                else:  # Captum's product, with the map placed where the crop lies
                    cam = attr.LayerGradCam(model, self._layer).attribute(
                        x, target=target, relu_attributions=True)
                    guided = attr.GuidedBackprop(model).attribute(x, target=target)
                    out = guided * _cam_on_input(cam, x, model, "nearest")
        elif method == "ig":
            out = attr.IntegratedGradients(model).attribute(
                x, baselines=self.black(x), target=target, n_steps=IG_STEPS,
                internal_batch_size=max(len(x) * 8, 64))
        elif method == "saliency":
            out = attr.Saliency(model).attribute(x, target=target, abs=True)
        else:  # occlusion: black patches of about 1/7 of the side, side by side (49 at 28x28;
            # half-overlapping ones cost 3.4x as many passes for a smoother map)
            c, h, w = x.shape[1:]
            ph, pw = max(2, h // 7), max(2, w // 7)
            out = attr.Occlusion(model).attribute(
                x, sliding_window_shapes=(c, ph, pw), strides=(c, ph, pw),
                baselines=self.black(x), target=target, perturbations_per_eval=64)
        return out.detach().float().numpy()
