"""torchvision-format pretrained weights, without torchvision.

cnnlab's ``alexnet``, ``vgg11`` and ``vgg16`` have exactly torchvision's ``state_dict`` keys and
shapes, so torchvision's ImageNet files load into them directly::

    model, info = create_pretrained("vgg16", in_channels=1, num_classes=10, input_size=28)

Files are looked up where ``torch.hub`` keeps them (:func:`hub_dir`:
``$TORCH_HOME/hub/checkpoints``), so a file torchvision already downloaded is reused, and are
downloaded there (checked against the hash prefix in the file name) unless downloading is off
(``download=False`` or ``$CNNLAB_OFFLINE=1``). Any other file in torchvision's key layout works
too: pass its path (and ``arch`` if the keys do not say which architecture it is).

Two adaptations make the weights fit a model that differs from the ImageNet one:

* **the classifier head** (``classifier.6``) is skipped when ``num_classes`` differs; the
  model keeps its freshly initialised head;
* **the first convolution** is folded from 3 channels to 1 (:func:`adapt_first_conv`): the
  1-channel model on a grey image normalised with the averaged mean/std computes what the RGB
  model computes on that image repeated three times and normalised per channel (exactly, away
  from the zero-padded border). 1-channel weights go into a 3-channel model as ``W / 3`` each.

Everything else must match exactly; errors name the first offending key.

Longer than 450 lines: finding, downloading, hash-checking and validating torchvision-format
weights, with a message for every way a file can fail to fit, is one concern.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CheckpointError, ConfigError
from cnnlab.models.base import IMAGENET_MEAN, IMAGENET_STD, Classifier, InputSpec, create_model
from cnnlab.registry import Registry

__all__ = [
    "GUESSABLE_ARCHS",
    "WEIGHTS",
    "WeightsSpec",
    "adapt_first_conv",
    "create_pretrained",
    "find_weights_file",
    "guess_arch",
    "hub_dir",
    "load_pretrained_weights",
    "read_state_dict",
]

OFFLINE_ENV = "CNNLAB_OFFLINE"  # set to 1 to forbid downloads (as for datasets)
BASE_URL = "https://download.pytorch.org/models/"
FIRST_CONV_KEY = "features.0.weight"
HEAD_PREFIX = "classifier.6"  # the last Linear of alexnet and vgg
# Architectures guess_arch() tries, in this order: the published ones, then their tiny test
# variants (same keys as alexnet / vgg11, told apart by the shapes).
GUESSABLE_ARCHS = ("alexnet", "vgg11", "vgg16", "alexnet-tiny", "vgg-tiny")


@dataclass(frozen=True)
class WeightsSpec:
    """One published weights file: where it comes from and what it expects."""

    name: str  # the registry key: "alexnet", "vgg11", "vgg16"
    arch: str  # the cnnlab model the weights fit
    filename: str  # torchvision's file name, e.g. "vgg16-397923af.pth"
    url: str  # BASE_URL + filename
    sha256_prefix: str  # the hex part of the file name; torch.hub checks the download with it
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    min_size: int = 32  # smallest input side in the standard layout (torchvision's meta)
    input_size: int = 224
    num_classes: int = 1000
    categories: tuple[str, ...] | None = None  # ImageNet's class names are not shipped


WEIGHTS: Registry[WeightsSpec] = Registry("weights")


def _register(spec: WeightsSpec, description: str) -> None:
    WEIGHTS.register(spec.name, description=description)(spec)


_register(
    WeightsSpec("alexnet", "alexnet", "alexnet-owt-7be5be79.pth",
                BASE_URL + "alexnet-owt-7be5be79.pth", "7be5be79", min_size=63),
    "torchvision AlexNet ImageNet-1k weights (IMAGENET1K_V1, top-1 56.5 %)",
)
_register(
    WeightsSpec("vgg11", "vgg11", "vgg11-8a719046.pth", BASE_URL + "vgg11-8a719046.pth",
                "8a719046"),
    "torchvision VGG-11 ImageNet-1k weights (IMAGENET1K_V1, top-1 69.0 %)",
)
_register(
    WeightsSpec("vgg16", "vgg16", "vgg16-397923af.pth", BASE_URL + "vgg16-397923af.pth",
                "397923af"),
    "torchvision VGG-16 ImageNet-1k weights (IMAGENET1K_V1, top-1 71.6 %)",
)


def hub_dir() -> Path:
    """Where ``torch.hub`` keeps downloaded weights: ``$TORCH_HOME/hub/checkpoints``.

    ``$TORCH_HOME`` defaults to ``$XDG_CACHE_HOME/torch``, then ``~/.cache/torch`` (the rule of
    ``torch.hub.get_dir()``, without its ``set_dir`` override).
    """
    cache = os.environ.get("XDG_CACHE_HOME", "~/.cache")
    home = os.environ.get("TORCH_HOME", os.path.join(cache, "torch"))
    return Path(home).expanduser() / "hub" / "checkpoints"


def _downloads_allowed(download: bool | None) -> bool:
    if download is None:
        return os.environ.get(OFFLINE_ENV, "0").strip() in ("", "0")
    return download


def find_weights_file(
    source: str, *, download: bool | None = None, progress: bool = True
) -> tuple[Path, WeightsSpec | None]:
    """The weights file for ``source`` and its spec (None for a file of unknown origin).

    Args:
        source: a name in :data:`WEIGHTS` (looked up, and downloaded if missing, in
            :func:`hub_dir`), or the path of a file. A registered name wins over a file of the
            same name in the current directory; write ``./alexnet`` for the file.
        download: fetch a missing registered file; ``None`` means yes unless
            ``$CNNLAB_OFFLINE`` is set to 1.
        progress: show torch.hub's progress bar while downloading.

    Raises:
        CheckpointError: a registered file that is missing and could not be downloaded (the
            message gives the full path expected and how to supply the file), or a source that
            is neither a registered name nor an existing file.
    """
    if source in WEIGHTS:
        spec = WEIGHTS.get(source)
        path = hub_dir() / spec.filename
        if path.is_file():
            return path, spec
        fix = (f"Fix: copy {spec.filename} (from {spec.url}) to {path}, set $TORCH_HOME to "
               "the directory above hub/checkpoints/ that holds it, or pass the file's path")
        if not _downloads_allowed(download):
            raise CheckpointError(
                f"weights {source!r} not found: expected {path}; downloading is off "
                f"(${OFFLINE_ENV}=1 or download=False). {fix}"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Writes to a temporary file and renames it only once the hash prefix matches.
            torch.hub.download_url_to_file(
                spec.url, str(path), hash_prefix=spec.sha256_prefix, progress=progress
            )
        except (OSError, RuntimeError) as e:  # URLError is an OSError; a bad hash a RuntimeError
            raise CheckpointError(
                f"weights {source!r} not found at {path} and downloading {spec.url} failed: "
                f"{e}. {fix}"
            ) from e
        return path, spec
    path = Path(source).expanduser()
    if path.is_file():
        by_file = {e.obj.filename: e.obj for e in WEIGHTS}
        return path, by_file.get(path.name)
    if path.exists():
        raise CheckpointError(f"weights source {source!r} is a directory, not a weights file")
    raise CheckpointError(
        f"weights source {source!r} is neither an existing file nor a registered name: "
        f"{WEIGHTS.unknown_message(source)}. Pass the path of a .pth file or one of the names"
    )


def _is_state_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping) and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in the ``torch.save`` file ``path``, on the CPU.

    Accepts a plain state dict, or a dict whose ``"state_dict"`` or ``"model"`` entry is one
    (cnnlab's own checkpoints, many training scripts). A ``"module."`` prefix on every key
    (``nn.DataParallel``) is removed. Loads with ``weights_only=True``: no code in the file runs.

    Raises:
        CheckpointError: the file is missing, unreadable or corrupt, or holds no state dict.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(f"weights file {str(path)!r} does not exist") from e
    except Exception as e:  # corrupt zip, truncated pickle, forbidden globals, ...
        raise CheckpointError(
            f"weights file {str(path)!r} cannot be read by torch.load(weights_only=True): "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. Expected a "
            "state dict saved with torch.save; the file may be truncated (download it again)"
        ) from e
    state = obj if _is_state_dict(obj) else None
    if state is None and isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if _is_state_dict(obj.get(key)):
                state = obj[key]
                break
    if state is None:
        found = (f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping)
                 else f"a {type(obj).__name__}")
        raise CheckpointError(
            f"weights file {str(path)!r} holds no state dict (a dict of parameter names to "
            f"tensors, directly or under 'state_dict' or 'model'); found {found}"
        )
    prefix = "module."
    if all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def guess_arch(state: Mapping[str, torch.Tensor]) -> str | None:
    """The architecture in :data:`GUESSABLE_ARCHS` whose ``state_dict`` these weights are.

    Each candidate is built on the meta device (no memory) with the input channels and class
    count read from the weights. The first candidate with the same keys and shapes wins; else
    the first with the same keys (the loader then names the shape that differs); else None.
    The tiny test variants are candidates too: they share keys with alexnet / vgg11 and are
    told apart by the shapes.
    """
    return _guess(state, exact=False)


def _guess(state: Mapping[str, torch.Tensor], *, exact: bool) -> str | None:
    """:func:`guess_arch`; with ``exact`` only a candidate whose shapes match too."""
    first, head = state.get(FIRST_CONV_KEY), state.get(HEAD_PREFIX + ".weight")
    in_channels = first.shape[1] if first is not None and first.dim() == 4 else 3
    num_classes = head.shape[0] if head is not None and head.dim() == 2 else 1000
    shapes = _shapes(state)
    same_keys = None
    for arch in GUESSABLE_ARCHS:
        with torch.device("meta"):
            model = create_model(arch, in_channels=max(1, in_channels),
                                 num_classes=max(2, num_classes), input_size=224)
        candidate = _shapes(model.state_dict())
        if candidate == shapes:
            return arch
        if same_keys is None and candidate.keys() == shapes.keys():
            same_keys = arch
    return None if exact else same_keys


def adapt_first_conv(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    in_channels: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """First-conv weights ``(O, C, kh, kw)`` and bias for a model with ``in_channels`` inputs.

    * ``C == in_channels``: unchanged.
    * 3 -> 1: with ``m``/``s`` the per-channel ``mean``/``std`` and ``m̄``/``s̄`` their averages,
      ``W1 = sum_c W_c s̄ / s_c`` and ``b1 = b + sum_{c,kh,kw} W_c (m̄ - m_c) / s_c``. The
      1-channel conv on ``(g - m̄) / s̄`` then equals the RGB conv on ``(g - m_c) / s_c`` for a
      grey image ``g`` repeated in every channel, exactly wherever the kernel does not reach
      the zero padding. A missing ``bias`` is treated as 0 (the correction is returned as bias).
    * 1 -> 3: ``W_c = W / 3`` for each channel, bias unchanged (a grey image repeated three
      times gives the 1-channel output).

    Computed in float64 and returned in ``weight``'s dtype.

    Raises:
        CheckpointError: another channel pair, or ``mean``/``std`` without 3 values for a fold.
    """
    channels = weight.shape[1]
    if channels == in_channels:
        return weight, bias
    if channels == 3 and in_channels == 1:
        if len(mean) != 3 or len(std) != 3:
            raise CheckpointError(
                f"folding RGB first-conv weights to 1 channel needs the 3 per-channel mean "
                f"and std the weights were trained with; got mean={tuple(mean)}, "
                f"std={tuple(std)}"
            )
        w = weight.double()
        m = torch.tensor(mean, dtype=torch.float64)
        s = torch.tensor(std, dtype=torch.float64)
        scale = (s.mean() / s).view(1, 3, 1, 1)
        folded = (w * scale).sum(1, keepdim=True)
        shift = ((m.mean() - m) / s).view(1, 3, 1, 1)
        correction = (w * shift).sum((1, 2, 3))
        new_bias = correction if bias is None else bias.double() + correction
        out_dtype = weight.dtype if bias is None else bias.dtype
        return folded.to(weight.dtype), new_bias.to(out_dtype)
    if channels == 1 and in_channels == 3:
        return (weight.double() / 3).repeat(1, 3, 1, 1).to(weight.dtype), bias
    raise CheckpointError(
        f"first-conv weights with {channels} input channel(s) cannot be adapted to "
        f"{in_channels}: only 3 -> 1 (folding) and 1 -> 3 (repeating) are supported. Build the "
        f"model with in_channels={channels}"
    )


def _head_prefix(model: nn.Module) -> str | None:
    """The qualified name of the model's last ``nn.Linear`` (its classifier head)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def _more(items: list[str]) -> str:
    return f" (and {len(items) - 1} more)" if len(items) > 1 else ""


def load_pretrained_weights(
    model: Classifier,
    state: Mapping[str, torch.Tensor],
    *,
    arch: str,
    skip_head: bool = True,
    first_conv_key: str = FIRST_CONV_KEY,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> list[str]:
    """Copy ``state`` into ``model`` (built as ``arch``); return the skipped head keys.

    Adaptations (not errors): the head (the last ``nn.Linear``) is skipped when ``skip_head``
    and its shape differs only in the class count, keeping the model's own head; the first conv
    (``first_conv_key`` and its bias) is adapted with :func:`adapt_first_conv` using ``mean`` and
    ``std`` (the weights' RGB statistics; ImageNet's by default) when the channel counts are
    3 and 1. Loads with ``strict=True`` afterwards, so nothing is silently left out.

    Raises:
        CheckpointError: missing or unexpected keys, or a shape that differs otherwise; the
            message names the first offending key, and the architecture the weights look like
            when :func:`guess_arch` recognises them as another one.
    """
    own = model.state_dict()
    mean = IMAGENET_MEAN if mean is None else tuple(mean)
    std = IMAGENET_STD if std is None else tuple(std)
    head = _head_prefix(model)
    head_keys = {f"{head}.weight", f"{head}.bias"} if head else set()
    bias_key = first_conv_key.rsplit(".", 1)[0] + ".bias"

    def hint() -> str:  # only a guess whose shapes match: not "alexnet" for a bad alexnet-tiny
        guess = _guess(state, exact=True)
        if guess is not None and guess != arch:
            return f" These look like {guess} weights, not {arch}: build the model as {guess!r}."
        return ""

    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing key {missing[0]!r}{_more(missing)}")
        if unexpected:
            parts.append(f"unexpected key {unexpected[0]!r}{_more(unexpected)}")
        raise CheckpointError(
            f"the weights do not fit model {arch!r}: {'; '.join(parts)}.{hint()} Expected "
            f"{len(own)} keys in {arch}'s layout ({next(iter(own))!r} ... {next(reversed(own))!r})"
        )

    new: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    weight, model_weight = state.get(first_conv_key), own.get(first_conv_key)
    if (weight is not None and model_weight is not None and weight.dim() == 4
            and weight.shape[1] != model_weight.shape[1]
            and weight.shape[:1] + weight.shape[2:] == model_weight.shape[:1]
            + model_weight.shape[2:]):
        w, b = adapt_first_conv(weight, state.get(bias_key), model_weight.shape[1], mean, std)
        new[first_conv_key] = w
        if b is not None and bias_key in own:
            new[bias_key] = b
    head_differs = any(
        state[k].shape != own[k].shape and state[k].shape[1:] == own[k].shape[1:]
        for k in head_keys
    )
    for key, target in own.items():
        if key in new:
            continue
        value = state[key]
        if key in head_keys and head_differs and skip_head:
            new[key] = target  # keep the model's own, freshly initialised head
            skipped.append(key)
            continue
        if value.shape != target.shape:
            fix = ""
            if key in head_keys and value.shape[1:] == target.shape[1:]:
                fix = (f" The head differs in the class count ({value.shape[0]} in the file): "
                       f"pass skip_head=True, or build the model with "
                       f"num_classes={value.shape[0]}.")
            raise CheckpointError(
                f"the weights do not fit model {arch!r}: key {key!r} has shape "
                f"{tuple(value.shape)} in the file but {tuple(target.shape)} in the model."
                f"{fix}{hint()}"
            )
        new[key] = value
    model.load_state_dict(new, strict=True)
    return skipped


def _channel_stats(
    values: tuple[float, ...], in_channels: int
) -> tuple[float, ...]:
    if in_channels == len(values):
        return values
    return (sum(values) / len(values),) * in_channels


def create_pretrained(
    source: str,
    *,
    arch: str | None = None,
    in_channels: int = 3,
    num_classes: int = 1000,
    input_size: int | tuple[int, int] | None = None,
    download: bool | None = None,
    progress: bool = True,
) -> tuple[Classifier, dict[str, Any]]:
    """A model initialised from torchvision-format weights, and what was loaded.

    Args:
        source: a name in :data:`WEIGHTS` or a weights file (see :func:`find_weights_file`).
        arch: the cnnlab model to build; needed only for a file whose origin is unknown and
            whose keys :func:`guess_arch` does not recognise. For a registered name it must be
            the spec's architecture (or None).
        in_channels: 3, or 1 (the first conv is folded, see :func:`adapt_first_conv`).
        num_classes: the head is kept from the file when it matches, else freshly initialised.
        input_size: the model's input size; default the weights' (224).
        download, progress: as in :func:`find_weights_file`.

    Returns:
        ``(model, info)``: the model has ``input_spec`` set to the weights' normalisation
        (averaged over the channels for 1 channel). ``info`` holds ``source`` (the file),
        ``weights`` (registered name or None), ``arch``, ``mean``, ``std``, ``min_size``,
        ``input_size`` ([H, W]), ``categories`` (None: not shipped), ``skipped`` (head keys
        left at their fresh initialisation) and ``adapted_first_conv``.

    Raises:
        CheckpointError: missing file, unreadable file, unknown architecture, or weights that
            do not fit (see :func:`load_pretrained_weights`).
        ConfigError: ``arch`` contradicts the registered weights, or invalid model options.
    """
    path, spec = find_weights_file(source, download=download, progress=progress)
    if spec is not None:
        if arch is not None and arch != spec.arch:
            raise ConfigError(
                f"weights {spec.name!r} are for model {spec.arch!r}, not {arch!r}; leave arch "
                f"unset or pass arch={spec.arch!r}"
            )
        arch = spec.arch
    state = read_state_dict(path)
    if arch is None:
        arch = guess_arch(state)
    if arch is None:
        raise CheckpointError(
            f"cannot tell which architecture the weights in {str(path)!r} are for: their keys "
            f"({len(state)}, first {next(iter(state))!r}) match none of "
            f"{', '.join(GUESSABLE_ARCHS)}; set arch to say which model they are for"
        )
    size = input_size if input_size is not None else (spec.input_size if spec else 224)
    model = create_model(arch, in_channels=in_channels, num_classes=num_classes, input_size=size)
    rgb_mean = tuple(spec.mean) if spec else IMAGENET_MEAN
    rgb_std = tuple(spec.std) if spec else IMAGENET_STD
    skipped = load_pretrained_weights(model, state, arch=arch, mean=rgb_mean, std=rgb_std)
    first = state.get(FIRST_CONV_KEY)
    adapted = first is not None and first.dim() == 4 and first.shape[1] != in_channels
    mean, std = _channel_stats(rgb_mean, in_channels), _channel_stats(rgb_std, in_channels)
    old = model.input_spec
    model.input_spec = InputSpec(in_channels, old.height, old.width, mean, std)
    info: dict[str, Any] = {
        "source": str(path),
        "weights": spec.name if spec else None,
        "arch": arch,
        "mean": list(mean),
        "std": list(std),
        "min_size": spec.min_size if spec else model.min_size,
        "input_size": [old.height, old.width],
        "categories": list(spec.categories) if spec and spec.categories else None,
        "skipped": skipped,
        "adapted_first_conv": adapted,
    }
    return model, info
