"""The one way an image becomes model input: a :class:`Preprocess` built from the spec a
checkpoint records.

Every path that turns a file, an upload or a stored image into a tensor goes through it:
image-folder datasets for training, fine-tuning, cross-validation and tuning; ``evaluate`` on
a folder; ``predict``; every form the service accepts; feedback images and retraining; the
export parity check and INT8 calibration. So two commands never see one image differently.

Two kinds:

- ``mnist-digits``: a digit brought to MNIST's form by :func:`cnnlab.data.to_mnist_form`
  (polarity detected, cropped to the ink, fitted into 20x20 keeping the aspect ratio, centred
  by centre of mass in 28x28), then resized to the model's size and repeated over its
  channels if those differ from 1x28x28.
- ``resize``: the whole image, transparency composited on white, converted to 1 (luma) or 3
  (RGB) channels and resized to ``height`` x ``width`` with ``interpolation`` (aspect ratio not
  kept: what the training images went through too).

Records of the MNIST family (IDX files) are already in MNIST form, so ``mnist-digits``
applies only its resize and channel steps to them (:meth:`Preprocess.from_mnist_form`), which
is what a file of the same digit goes through after :func:`to_mnist_form`; on all 10,000 MNIST
test digits :func:`to_mnist_form` returns the record unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from cnnlab.data.digits import to_mnist_form
from cnnlab.data.folders import image_to_array
from cnnlab.errors import ConfigError, DataError

__all__ = ["INTERPOLATIONS", "KINDS", "Preprocess", "digit_likeness"]

KINDS = ("mnist-digits", "resize")
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
# what each kind resizes with unless the spec says otherwise: antialiased for whole images,
# bilinear for an MNIST-form digit (as the MNIST models' predict has always done)
_DEFAULT_INTERPOLATION = {"mnist-digits": "bilinear", "resize": "lanczos"}


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model's uint8 input ``(channels, height, width)``.

    Raises:
        ConfigError: from the constructor, for an unknown kind or interpolation, channels
            other than 1 or 3, or a size below 1.
    """

    kind: str  # mnist-digits | resize
    channels: int  # 1 (luma) or 3 (RGB)
    height: int
    width: int
    interpolation: str = ""  # "" = the kind's default (bilinear for digits, lanczos otherwise)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown preprocessing kind {self.kind!r}; expected one of "
                              f"{', '.join(KINDS)}")
        if self.channels not in (1, 3):
            raise ConfigError(f"preprocessing channels must be 1 or 3; got {self.channels!r}")
        for name in ("height", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"preprocessing {name} must be an int >= 1; got {value!r}")
        if not self.interpolation:
            object.__setattr__(self, "interpolation", _DEFAULT_INTERPOLATION[self.kind])
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"unknown interpolation {self.interpolation!r}; expected one of "
                              f"{', '.join(INTERPOLATIONS)}")

    # --- the spec ---------------------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Preprocess:
        """The preprocessing a checkpoint (or an ONNX file's metadata) records.

        Raises:
            ConfigError: the spec is not a mapping, names an unknown kind, or lacks a field.
        """
        if not isinstance(spec, Mapping):
            raise ConfigError(f"a preprocessing spec must be a mapping; got {spec!r}")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"unknown preprocessing kind {kind!r} in spec {dict(spec)}; this "
                              f"cnnlab knows {', '.join(KINDS)}")
        try:
            return cls(kind=str(kind), channels=int(spec["channels"]),
                       height=int(spec["height"]), width=int(spec["width"]),
                       interpolation=str(spec.get("interpolation") or ""))
        except KeyError as e:
            raise ConfigError(f"preprocessing spec {dict(spec)} lacks the field {e.args[0]!r}"
                              ) from e
        except (TypeError, ValueError) as e:
            raise ConfigError(f"preprocessing spec {dict(spec)} is invalid: {e}") from e

    def to_spec(self) -> dict[str, Any]:
        """The dict checkpoints and ONNX metadata store."""
        return asdict(self)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def describe(self) -> str:
        what = ("digits brought to MNIST form" if self.kind == "mnist-digits"
                else "images resized")
        return (f"{self.kind} ({what}, {self.channels}x{self.height}x{self.width}, "
                f"{self.interpolation})")

    # --- applying it ------------------------------------------------------------------------
    def __call__(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """One decoded image as uint8 ``(channels, height, width)``; may be read-only.

        Args:
            image: a PIL image of any mode and size (as :func:`cnnlab.data.read_image`
                returns), or for ``mnist-digits`` also an ``(H, W)`` / ``(H, W, 3|4)`` array.

        Raises:
            DataError: ``mnist-digits`` found no ink to classify (a blank page).
        """
        if self.kind == "mnist-digits":
            return self.from_mnist_form(to_mnist_form(image, copy=False))
        if isinstance(image, np.ndarray):
            image = _array_to_pil(image)
        return image_to_array(image, self.channels, (self.height, self.width),
                              resample=INTERPOLATIONS[self.interpolation])

    def from_mnist_form(self, digit: np.ndarray) -> np.ndarray:
        """A uint8 ``(28, 28)`` digit already in MNIST form (an IDX record, or what
        :func:`to_mnist_form` returned) as this model's input ``(C, H, W)``."""
        if (self.height, self.width) != digit.shape:
            digit = np.asarray(Image.fromarray(np.ascontiguousarray(digit)).resize(
                (self.width, self.height), INTERPOLATIONS[self.interpolation]))
        if self.channels == 1:
            return digit.reshape(1, *digit.shape)
        return np.repeat(digit[None], self.channels, axis=0)

    def records(self, images: np.ndarray) -> np.ndarray:
        """Records of a registered dataset (uint8 ``(N, 1, H, W)``, MNIST form for the digit
        kind) as model input ``(N, C, H, W)``: each record goes through the same steps as a
        file of it would. Unchanged when it already has the model's shape."""
        if tuple(images.shape[1:]) == self.shape:
            return images
        if self.kind == "mnist-digits" and images.shape[1:] == (1, 28, 28):
            return np.stack([self.from_mnist_form(im[0]) for im in images])
        mode = "L" if images.shape[1] == 1 else "RGB"
        out = []
        for im in images:
            arr = im[0] if mode == "L" else im.transpose(1, 2, 0)
            out.append(self(Image.fromarray(np.ascontiguousarray(arr), mode=mode)))
        return np.stack(out)


def _array_to_pil(array: np.ndarray) -> Image.Image:
    """An ``(H, W)`` or ``(H, W, 3|4)`` array (uint8, or float on [0, 1]) as a PIL image."""
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        arr = np.clip(arr.astype(np.float64) * (255.0 if arr.max(initial=0) <= 1.0 else 1.0),
                      0, 255).round().astype(np.uint8)
    if arr.ndim == 2:
        return Image.fromarray(arr, mode="L")
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return Image.fromarray(arr, mode="RGB" if arr.shape[2] == 3 else "RGBA")
    raise DataError(f"an image array must have shape (H, W), (H, W, 3) or (H, W, 4); got "
                    f"{arr.shape}")


def digit_likeness(images: Sequence[Image.Image]) -> tuple[bool, str]:
    """Whether images look like handwritten digits an MNIST model can read: greyscale-ish
    strokes on a plain background, in which :func:`to_mnist_form` finds ink.

    Returns:
        ``(looks_like_digits, why)``, ``why`` saying what was measured.
    """
    if not images:
        return False, "no images"
    colourful = failed = busy = 0
    for image in images:
        rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
        if float((rgb.max(axis=2) - rgb.min(axis=2)).mean()) > 0.06 * 255:
            colourful += 1
        grey = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
        edge = max(1, round(0.05 * min(grey.shape)))
        border = np.concatenate([grey[:edge].ravel(), grey[-edge:].ravel(),
                                 grey[:, :edge].ravel(), grey[:, -edge:].ravel()])
        paper = float(np.median(border))
        # strokes on a plain background: most pixels are close to the paper's level
        if float((np.abs(grey - paper) > 0.25).mean()) > 0.5:
            busy += 1
        try:
            to_mnist_form(image, copy=False)
        except DataError:
            failed += 1
    n = len(images)
    why = (f"of {n} sampled images, {colourful} are in colour, {busy} are not strokes on a "
           f"plain background and {failed} have no ink to find")
    return (colourful + busy + failed) <= 0.1 * n, why
