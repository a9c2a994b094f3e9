"""Fine-tuning: turn any checkpoint, or torchvision-format pretrained weights, into a
classifier for an image folder, with few labels if need be.

Sources: a cnnlab run directory or checkpoint (the MNIST model included), a registered
pretrained-weights name (``alexnet``, ``vgg11``, ``vgg16``: torchvision's ImageNet files, from
the PyTorch hub cache or downloaded), or a torchvision-format ``.pth`` file.

Adaptation: the data is brought to a cnnlab source's input (size, channels: an RGB folder is
converted to grey for a 1-channel model) through the :class:`~cnnlab.inference.Preprocess`
the new checkpoint records, so ``predict`` and ``serve`` later see each file as training did:
a digit model's ``mnist-digits`` when the folder looks like digits on paper, ``resize``
otherwise (said in the log; ``preprocess`` chooses). The splits are files listed in the run's
``splits.json``: ``shots`` per class for training and the rest for test, or a held-out
``test_fraction`` without a test folder. Pretrained ImageNet weights are brought to the data
(a grey folder folds the first layer's filters to one channel; images are resized to the
weights' input size unless ``image_size`` says otherwise). The head is kept when the folder's
classes are the source's classes (same names: a domain shift, such as another digit dataset),
and replaced otherwise. Normalisation always comes from the source and is stored in the
checkpoint, so predict and serve apply it.

Strategies:

- ``linear``: feature extraction. Everything but the last layer is frozen; with the feature
  cache (default) the frozen network runs once over the data and only the last layer trains,
  on the cached features, so an epoch costs almost nothing (no augmentation then).
- ``finetune``: every layer trains, at one learning rate.
- ``gradual``: gradual unfreezing (Howard and Ruder 2018): the last layer first, then one
  more layer from the top at even intervals, until everything trains.
- ``discriminative``: every layer trains, earlier layers at smaller learning rates
  (``lr * lr_decay ** distance from the top``).

Longer than 450 lines: sources, folder splits, strategies and their freezing schedules are one
workflow that reads top to bottom; the training itself is :func:`cnnlab.training.loop.fit`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab._io import atomic_write_bytes
from cnnlab.config import resolve_config
from cnnlab.data import (
    FolderListing,
    ImageDataset,
    list_image_folder,
    probe_images,
    read_folder_images,
)
from cnnlab.errors import CheckpointError, ConfigError, DataError, invalid_value
from cnnlab.inference.preprocess import KINDS, Preprocess
from cnnlab.models import Classifier, InputSpec, create_model
from cnnlab.training.data import (
    MANIFEST_NAME,
    PreparedData,
    folder_manifest,
    split_folder,
    suggest_digit_preprocess,
)

__all__ = ["STRATEGIES", "FinetuneResult", "FinetuneSettings", "finetune", "head_module",
           "layer_groups", "load_source"]

log = logging.getLogger("cnnlab")

STRATEGIES = ("linear", "finetune", "gradual", "discriminative")
# below this many training images in some class, no validation slice is held out: a few
# images per class are too few to steer early stopping by, and too valuable to hold back
# (10-shot sklearn digits: 98.9 % test with all 10 images for training, 97.6 % with 2 held out)
VAL_MIN_PER_CLASS = 30


@dataclass(frozen=True)
class FinetuneSettings:
    source: str  # run dir, checkpoint, pretrained name, or torchvision .pth file
    train_dir: str
    out: str
    val_dir: str | None = None
    test_dir: str | None = None
    shots: int = 0  # K training images per class (0 = all); the rest are the test split
    strategy: str = "finetune"
    scratch: bool = False  # same architecture and data, random initial weights (a baseline)
    arch: str | None = None  # architecture of a plain state-dict file
    epochs: int = 0  # 0 = auto: about 300 optimiser steps, 10 to 200 epochs
    batch_size: int = 32
    lr: float = 0.0  # 0 = auto: 1e-2 linear, 1e-3 from a cnnlab model, 1e-4 from ImageNet
    val_fraction: float | None = None  # None = auto: 0.2 if every class has >= 30 images
    augment: bool | None = None  # None = auto: on, except for the cached linear strategy
    # epochs without validation gain (0 = off): off, since with a few validation images it
    # stopped after ~30 steps and never helped (benchmarks/bench_fewshot.py sweep)
    early_stopping: int = 0
    lr_decay: float = 0.7  # discriminative: factor per layer going down
    image_size: int = 0  # 0 = the source's input size
    preprocess: str = ""  # "" = auto: the source's (mnist-digits only for digit-like folders)
    test_fraction: float = 0.2  # no test_dir and no shots: the held-out test share
    feature_cache: bool = True  # linear strategy: compute the frozen features once
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    download: bool | None = None  # pretrained weights: None = unless $CNNLAB_OFFLINE=1
    overwrite: bool = False
    progress: bool = True


@dataclass
class FinetuneResult:
    model: Classifier
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    info: dict[str, Any]
    out: Path
    test: ImageDataset | None


# --- the source -------------------------------------------------------------------------------

@dataclass
class _Source:
    model: Classifier
    arch: str
    kwargs: dict[str, Any]  # model kwargs other than in_channels, num_classes, input_size
    classes: list[str] | None  # None: ImageNet weights without category names
    preprocessing: dict[str, Any] | None
    kind: str  # "checkpoint" | "pretrained"
    info: dict[str, Any]


def load_source(source: str, *, arch: str | None = None, channels: int = 3,
                image_size: int = 0, download: bool | None = None,
                progress: bool = True) -> _Source:
    """The model to start from.

    Raises:
        CheckpointError: not a cnnlab checkpoint nor a weights file that fits an architecture.
    """
    from cnnlab.inference.checkpoint import checkpoint_path

    path = Path(source)
    ckpt_path = checkpoint_path(source)
    if ckpt_path.is_file():
        try:
            raw = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"cannot read {ckpt_path}: {e}") from e
        if isinstance(raw, dict) and all(k in raw for k in ("model", "state_dict", "classes",
                                                             "input_spec", "preprocessing")):
            from cnnlab.inference.model import load_model

            m = load_model(ckpt_path)
            kwargs = {k: v for k, v in m.config.get("model", {}).items() if k != "name"}
            return _Source(model=m.classifier, arch=m.config["model"]["name"], kwargs=kwargs,
                           classes=list(m.classes), preprocessing=m.preprocessing,
                           kind="checkpoint", info={"source": str(ckpt_path), "kind":
                                                    "cnnlab checkpoint"})
    elif path.is_dir():
        raise CheckpointError(f"{path} has no model.pt; pass a run directory, a checkpoint, a "
                              "pretrained name (alexnet, vgg11, vgg16) or a .pth file")
    from cnnlab.models.pretrained import create_pretrained

    size = image_size or None
    model, info = create_pretrained(source, arch=arch, in_channels=channels, num_classes=1000,
                                    input_size=size, download=download, progress=progress)
    return _Source(model=model, arch=info["arch"], kwargs={}, classes=info.get("categories"),
                   preprocessing=None, kind="pretrained", info={**info, "kind": "pretrained"})


def head_module(model: nn.Module) -> nn.Linear:
    """The last layer: the last ``nn.Linear`` registered (every family defines it last)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"{type(model).__name__} has no linear head to fine-tune")
    return linears[-1]


def layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """The parameters in layer groups, input first: each conv or linear layer with the norm
    layers that follow it. The last group is the head."""
    groups: list[list[nn.Parameter]] = []
    for m in model.modules():
        own = list(m.parameters(recurse=False))
        if not own:
            continue
        if isinstance(m, nn.Conv2d | nn.Linear) or not groups:
            groups.append(own)
        else:  # batch norm and the like join the layer before them
            groups[-1].extend(own)
    covered = {id(p) for g in groups for p in g}
    rest = [p for p in model.parameters() if id(p) not in covered]
    if rest:
        groups[-1].extend(rest)
    return groups


# --- data -------------------------------------------------------------------------------------

def _listing(path: str, what: str) -> FolderListing:
    listing = list_image_folder(path)
    if len(listing.classes) < 2:
        raise DataError(f"{what} {path} has one class ({listing.classes[0]!r}); a classifier "
                        "needs at least two class folders")
    return listing


def _take_shots(listing: FolderListing, shots: int, seed: int
                ) -> tuple[FolderListing, FolderListing]:
    """``shots`` files per class (seeded) for training, and the rest."""
    targets = torch.tensor(listing.targets)
    counts = torch.bincount(targets, minlength=len(listing.classes))
    short = [(listing.classes[k], int(n)) for k, n in enumerate(counts) if n <= shots]
    if short:
        listed = ", ".join(f"{c!r} ({n})" for c, n in short)
        raise DataError(
            f"The 'shots' setting of finetune ({shots}) needs more than {shots} images in every "
            f"class (the rest are the test split), but class {listed} has too few; lower it or "
            "add images, or set test_dir to test on other images"
        )
    g = torch.Generator().manual_seed(seed)
    keep = []
    for k in range(len(listing.classes)):
        idx = torch.nonzero(targets == k).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=g)[:shots]])
    train_idx = torch.cat(keep).sort().values
    mask = torch.ones(len(listing), dtype=torch.bool)
    mask[train_idx] = False
    return (listing.subset(train_idx.tolist()),
            listing.subset(torch.nonzero(mask).flatten().tolist()))


def _check_listing_classes(name: str, listing: FolderListing, classes: list[str]) -> None:
    if list(listing.classes) != classes:
        raise DataError(f"{name} has classes {listing.classes} but the training folder has "
                        f"{classes}; both need the same class folders")


def _choose_preprocess(s: FinetuneSettings, src: _Source, listing: FolderListing,
                       channels: int, size: tuple[int, int]) -> Preprocess:
    """How the folder's files become input: a digit model's ``mnist-digits`` when the
    folder looks like digits (else ``resize``, said in the log), ``resize`` for pretrained
    weights, or what ``preprocess`` asks for."""
    if s.preprocess:
        return Preprocess(s.preprocess, channels, size[0], size[1])
    if src.kind == "checkpoint" and src.preprocessing is not None:
        source = Preprocess.from_spec(src.preprocessing)
        if source.kind == "mnist-digits":
            at_size = Preprocess("mnist-digits", channels, size[0], size[1])
            return suggest_digit_preprocess(listing, at_size)
    return Preprocess("resize", channels, size[0], size[1])


# --- training ---------------------------------------------------------------------------------

def _auto_epochs(n_train: int, batch_size: int) -> int:
    steps = max(1, math.ceil(n_train / batch_size))
    return int(min(200, max(10, math.ceil(300 / steps))))


def _auto_lr(strategy: str, kind: str, scratch: bool) -> float:
    if strategy == "linear":
        return 1e-2
    if scratch or kind == "checkpoint":
        return 1e-3
    return 1e-4


def finetune(s: FinetuneSettings) -> FinetuneResult:
    """Fine-tune ``s.source`` on ``s.train_dir`` into the run directory ``s.out``.

    Raises:
        ConfigError: invalid settings. DataError: empty, one-class or unreadable folders,
        ``shots`` larger than a class. CheckpointError: an unusable source.
    """
    _check(s)
    out = Path(s.out)
    if (out / "model.pt").exists() and not s.overwrite:
        raise ConfigError(f"{out} already holds a run; set overwrite=True to replace it, or "
                          "choose another directory")
    if s.threads:
        torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    # the folder's channels decide a pretrained model's first layer
    listing = _listing(s.train_dir, "training folder")
    _, gray = probe_images(listing, limit=200)
    src = load_source(s.source, arch=s.arch, channels=1 if gray else 3,
                      image_size=s.image_size, download=s.download, progress=s.progress)
    spec = src.model.input_spec
    channels = spec.channels
    size = (s.image_size, s.image_size) if s.image_size else (spec.height, spec.width)
    if src.kind == "checkpoint" and s.image_size and src.model.fixed_size \
            and size != (spec.height, spec.width):
        raise ConfigError(
            f"{src.arch} takes exactly {spec.height}x{spec.width} images; set image_size=0 (the "
            "source's size)")
    pre = _choose_preprocess(s, src, listing, channels, size)
    log.info("%s: %s", s.train_dir, pre.describe())

    # the splits, as files: written to splits.json, read back by evaluate and report
    classes = list(listing.classes)
    train_l, test_l = listing, None
    if s.test_dir is not None:
        test_l = _listing(s.test_dir, "test folder")
        _check_listing_classes(f"test folder {s.test_dir}", test_l, classes)
    if s.shots:
        train_l, rest = _take_shots(listing, s.shots, s.seed)
        test_l = test_l if test_l is not None else rest
    elif test_l is None:
        train_l, test_l = split_folder(listing, s.test_fraction, s.seed, "test")
    val_l = None
    if s.val_dir is not None:
        val_l = _listing(s.val_dir, "validation folder")
        _check_listing_classes(f"validation folder {s.val_dir}", val_l, classes)
    else:
        counts = torch.bincount(torch.tensor(train_l.targets), minlength=len(classes))
        frac = s.val_fraction if s.val_fraction is not None else (
            0.2 if int(counts.min()) >= VAL_MIN_PER_CLASS else 0.0)
        if frac > 0:
            train_l, val_l = split_folder(train_l, frac, s.seed, "validation")
    train, train_sha = read_folder_images(train_l, pre, progress=s.progress)
    parts = {"train": (train_l, train_sha)}
    val = test = None
    if val_l is not None:
        val, val_sha = read_folder_images(val_l, pre, progress=s.progress)
        parts["val"] = (val_l, val_sha)
    test, test_sha = read_folder_images(test_l, pre, progress=s.progress)
    parts["test"] = (test_l, test_sha)
    manifest = folder_manifest(s.train_dir, s.seed, pre, parts)

    # the model: source weights (or fresh ones), input and head adapted
    model = src.model
    same_head = src.classes is not None and src.classes == classes
    if s.scratch:
        model = create_model(src.arch, in_channels=channels, num_classes=len(classes),
                             input_size=size, **src.kwargs)
    elif not same_head:
        model.reset_classifier(len(classes))
    mean, std = spec.mean, spec.std
    model.input_spec = InputSpec(channels, size[0], size[1], mean, std)
    data = PreparedData(train=train, val=val, test=test, classes=classes, mean=tuple(mean),
                        std=tuple(std), preprocessing=pre.to_spec(), manifest=manifest)

    epochs = s.epochs or _auto_epochs(len(train), s.batch_size)
    lr = s.lr or _auto_lr(s.strategy, src.kind, s.scratch)
    cached = s.strategy == "linear" and s.feature_cache
    augment = s.augment if s.augment is not None else not cached
    if cached and s.augment:
        raise ConfigError("the feature cache computes each image's features once, so it cannot "
                          "augment; set feature_cache=False to augment with a frozen backbone")
    hflip = augment and src.kind == "pretrained" and channels == 3  # natural images, not digits
    cfg = resolve_config({
        "model": {"name": src.arch, **src.kwargs},
        "data": {"dataset": str(s.train_dir), "image_size": size[0] if size[0] == size[1]
                 else 0, "channels": channels, "val_fraction": 0.0, "preprocess": pre.kind,
                 "augment": {"enabled": augment, "rotation": 10.0, "scale_min": 0.9,
                             "scale_max": 1.1, "translate": 0.1, "hflip": hflip}},
        "optim": {"optimizer": "adam", "lr": lr, "scheduler": "cosine",
                  "weight_decay": 1e-4 if s.strategy == "linear" else 0.0},
        "train": {"epochs": epochs, "batch_size": s.batch_size, "seed": s.seed,
                  "device": s.device, "early_stopping": s.early_stopping if val is not None
                  else 0, "threads": s.threads, "label_smoothing": 0.0},
    })
    info = {"source": src.info, "arch": src.arch, "strategy": s.strategy, "scratch": s.scratch,
            "shots": s.shots, "head": "kept" if same_head and not s.scratch else "new",
            "classes": classes, "train_images": len(train),
            "val_images": len(val) if val is not None else 0,
            "test_images": len(test) if test is not None else 0,
            "input": [channels, size[0], size[1]], "mean": list(mean), "std": list(std),
            "preprocessing": pre.to_spec(),
            "epochs": epochs, "lr": lr, "augment": augment, "feature_cache": cached}

    out.mkdir(parents=True, exist_ok=True)
    splits_text = json.dumps(manifest) + "\n"
    atomic_write_bytes(out / MANIFEST_NAME, lambda f: f.write(splits_text.encode()))
    t0 = time.perf_counter()
    if cached:
        from cnnlab.training.cached import fit_head_on_features

        result = fit_head_on_features(model, cfg, data, out_dir=out, overwrite=s.overwrite,
                                      progress=s.progress)
    else:
        from cnnlab.training.loop import fit

        groups = layer_groups(model)
        result = fit(cfg, out_dir=out, overwrite=s.overwrite, progress=s.progress, data=data,
                     model=model, lr_groups=_lr_groups(s, groups),
                     on_epoch_start=_epoch_start(s, groups, epochs))
    info["wall_time_s"] = round(time.perf_counter() - t0, 2)
    info["train_time_s"] = result.metrics.get("train_time_s")
    (out / "finetune.json").write_text(json.dumps(info, indent=2) + "\n")
    return FinetuneResult(model=result.model, metrics=result.metrics, history=result.history,
                          info=info, out=out, test=test)


def _check(s: FinetuneSettings) -> None:
    checks = [
        ("strategy", s.strategy in STRATEGIES, f"one of {', '.join(STRATEGIES)}"),
        ("shots", s.shots >= 0, ">= 0 (0 = all images)"),
        ("epochs", s.epochs >= 0, ">= 0 (0 = auto)"),
        ("batch_size", s.batch_size >= 1, ">= 1"),
        ("lr", s.lr >= 0 and math.isfinite(s.lr), ">= 0 (0 = auto)"),
        ("early_stopping", s.early_stopping >= 0, ">= 0 (0 = off)"),
        ("lr_decay", 0 < s.lr_decay <= 1, "in (0, 1]"),
        ("image_size", s.image_size >= 0, ">= 0 (0 = the source's size)"),
        ("val_fraction", s.val_fraction is None or 0 <= s.val_fraction < 1, "in [0, 1)"),
        ("test_fraction", 0 < s.test_fraction < 1, "in (0, 1)"),
        ("preprocess", s.preprocess in ("", *KINDS), f"one of {', '.join(KINDS)}"),
        ("seed", 0 <= s.seed <= 2**32 - 1, "in [0, 4294967295]"),
        ("threads", s.threads >= 0, ">= 0 (0 = default)"),
    ]
    for name, ok, expected in checks:
        if not ok:
            raise ConfigError(invalid_value(name, getattr(s, name), expected,
                                            kind="setting of finetune"))
    if s.scratch and s.strategy != "finetune":
        raise ConfigError("scratch=True trains every layer from random weights; it goes with "
                          "strategy='finetune' only")


def _lr_groups(s: FinetuneSettings, groups: list[list[nn.Parameter]]
               ) -> Callable[[Classifier], list[tuple[list[nn.Parameter], float]]]:
    def make(model: Classifier) -> list[tuple[list[nn.Parameter], float]]:
        n = len(groups)
        if s.strategy == "discriminative":
            return [(g, s.lr_decay ** (n - 1 - i)) for i, g in enumerate(groups)]
        return [(g, 1.0) for g in groups]

    return make


def _epoch_start(s: FinetuneSettings, groups: list[list[nn.Parameter]], epochs: int
                 ) -> Callable[[int, Classifier], None] | None:
    """Freeze what the strategy keeps frozen this epoch, and keep frozen layers in eval mode
    (their batch-norm statistics and dropout stay as trained)."""
    n = len(groups)
    if s.strategy == "linear":
        trainable = [i == n - 1 for i in range(n)]

        def linear(epoch: int, model: Classifier) -> None:
            _apply(model, groups, trainable)

        return linear
    if s.strategy == "gradual":
        every = max(1, epochs // n)

        def gradual(epoch: int, model: Classifier) -> None:
            thawed = min(n, 1 + epoch // every)  # the head, then one more group per interval
            _apply(model, groups, [i >= n - thawed for i in range(n)])

        return gradual
    return None


def _apply(model: nn.Module, groups: list[list[nn.Parameter]], trainable: list[bool]) -> None:
    frozen: set[int] = set()
    for g, on in zip(groups, trainable, strict=True):
        for p in g:
            p.requires_grad_(on)
            if not on:
                frozen.add(id(p))
    modules = list(model.modules())
    for i, m in enumerate(modules):
        own = list(m.parameters(recurse=False))
        if own and all(id(p) in frozen for p in own):
            m.eval()  # a frozen layer: batch-norm statistics stay as trained
        elif isinstance(m, nn.Dropout):
            # dropout feeding a frozen layer would only add noise to what it was trained on
            nxt = next((q for q in modules[i + 1:] if list(q.parameters(recurse=False))), None)
            if nxt is not None and all(id(p) in frozen for p in nxt.parameters(recurse=False)):
                m.eval()
