"""Training configuration: frozen dataclasses, TOML files, ``--set`` overrides and recipes.

Precedence, lowest first: field defaults < recipe < config file (``-c``) < ``--set a.b=v`` <
explicit flags; :func:`resolve_run_config` layers them for ``cnnlab train``, ``cnnlab cv``
and ``cnnlab.train()`` alike. Unknown keys are rejected with a "did you mean". The resolved
config is written to every run directory as ``config.toml`` and stored in checkpoints, so a
run can be reproduced with ``cnnlab train -c runs/NAME/config.toml``.

Each field says, in its :func:`setting` metadata, what it means (the ``--help`` text), the
range it must lie in, and whether it is a CLI flag; :data:`FLAGS` (the CLI's settings flags
and the keywords of ``cnnlab.train()``) is generated from that, so a field, its flag and its
check cannot drift apart.

Longer than 450 lines on purpose: every setting is declared here once, with its help, range and
flag, and the CLI flags and the checks are generated from it.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from cnnlab.errors import ConfigError, SettingError, unknown_name

__all__ = [
    "FLAGS",
    "FLAG_KEYS",
    "RECIPES",
    "AdversarialSettings",
    "AugmentSettings",
    "Config",
    "DataConfig",
    "Flag",
    "ModelConfig",
    "OptimConfig",
    "SettingError",
    "TrainConfig",
    "dump_toml",
    "flags_layer",
    "load_config_file",
    "parse_set",
    "resolve_config",
    "resolve_run_config",
    "setting",
]


# --- field metadata: help, flag, range --------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """A range check: ``ok(value, settings)`` (the settings object, for checks that compare
    two fields) and the text ``expected`` that the error message quotes."""

    ok: Callable[[Any, Any], bool]
    expected: str


def at_least(low: float, expected: str = "") -> Check:
    return Check(lambda v, _: v >= low, expected or f">= {low}")


def above(low: float, expected: str = "") -> Check:
    return Check(lambda v, _: v > low, expected or f"> {low}")


def within(low: float, high: float, bounds: str = "[]") -> Check:
    """``low <= v <= high``; ``bounds`` "(]", "[)" or "()" opens an end."""
    lo = (lambda v: v > low) if bounds[0] == "(" else (lambda v: v >= low)
    hi = (lambda v: v < high) if bounds[1] == ")" else (lambda v: v <= high)
    return Check(lambda v, _: lo(v) and hi(v), f"in {bounds[0]}{low}, {high}{bounds[1]}")


def one_of(*choices: Any, expected: str = "") -> Check:
    return Check(lambda v, _: v in choices,
                 expected or "one of " + ", ".join(str(c) for c in choices))


def setting(default: Any, help: str = "", *, valid: Check | None = None,
            flag: bool | str = False, group: str = "", choices: Sequence[str] = (),
            metavar: str | None = None, shown: str = "", values: Sequence[str] = (),
            value_key: str = "") -> Any:
    """A config field whose metadata holds its help, its range and its CLI flag.

    Args:
        default: the field's default, which ``--help`` quotes.
        help: what the setting does, for ``--help`` (without the default).
        valid: the range it must lie in (``choices`` implies one). Every number is also
            checked to be finite.
        flag: ``True`` makes it a CLI flag named after the field (``--weight-decay``), a string
            names the flag (``"model"`` for ``model.name``); ``False``: only ``--set`` and files.
        group: the ``--help`` group; by default the section's ("model and data",
            "optimisation").
        choices: the values the flag accepts.
        metavar: the flag's placeholder in ``--help``.
        shown: how ``--help`` states the default, where the bare value says little ("off" for
            0); ``{}`` in it is replaced by the default (``"{:.4f}"``).
        values: for a bool flag, the values it may also take (``--augment robust``): one
            turns the setting on and sets the sibling field ``value_key`` to it.
        value_key: the field of the same section that such a value sets.
    """
    if choices and valid is None:
        valid = one_of(*choices)
    return field(default=default, metadata={
        "help": help, "valid": valid, "flag": flag, "group": group,
        "choices": tuple(choices), "metavar": metavar, "shown": shown,
        "values": tuple(values), "value_key": value_key})


class _Section:
    """Validation for a settings dataclass: every field against the range in its metadata."""

    prefix: ClassVar[str] = ""  # the dotted path of the section ("data.augment.")

    def validate(self) -> Self:
        """Check every field's type and range (and those of nested sections); return self.

        Raises:
            SettingError: a value out of range, naming the setting (``train.min_delta``) and
                the accepted range.
        """
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        # finiteness first, so that a check comparing two fields sees finite numbers
        for f in fields:
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) \
                    and not math.isfinite(value):
                check: Check | None = f.metadata.get("valid")
                raise SettingError(self.prefix + f.name,
                                   "finite" + (f" and {check.expected}" if check else ""), value)
        for f in fields:
            value = getattr(self, f.name)
            if isinstance(value, _Section):
                value.validate()
            elif (check := f.metadata.get("valid")) is not None and not check.ok(value, self):
                raise SettingError(self.prefix + f.name, check.expected, value)
        return self


# --- the settings -----------------------------------------------------------------------------

@dataclass(frozen=True)
class AugmentSettings(_Section):
    prefix: ClassVar[str] = "data.augment."

    enabled: bool = setting(  # batched random augmentation on every training batch
        False, "random rotation, scaling and shifts on every batch; --augment robust adds "
               "noise, blur, thinner and thicker strokes, stray strokes and occlusion; "
               "--no-augment: none",
        flag="augment", values=("affine", "robust"), value_key="kind")
    # affine = the random affine alone; robust = the affine, then noise, blur, morphology and
    # stray strokes, each on a share robust_p of the samples (cnnlab.data.robust)
    kind: str = setting("affine", choices=("affine", "robust"))
    robust_p: float = setting(0.5, valid=within(0, 1))  # robust: share of samples per family
    # robust: the fifth family, inverted bands and erased edges
    # (chosen in benchmarks/bench_robust_training.py --stages occlusion-search)
    robust_occlusion: bool = setting(True)
    # robust: which edges occlusion erases, all four or left-right only (--stages erase-search)
    robust_erase_edges: str = setting("all", choices=("all", "left-right"))
    # robust: the outlines of the morphology family, a band over the stroke or a thin hollow
    # ring (benchmarks/bench_robust_training.py --stages outline-search)
    robust_outline: str = setting("band", choices=("band", "thin"))
    # robust: the share of the morphology family's samples outlined, the rest thicker or
    # thinner strokes (--stages edge-search)
    robust_outline_share: float = setting(0.2, valid=within(0, 1))
    # robust: the European styles of the digits 1 and 7 (a flag and a foot on the 1s, a bar
    # across the 7s' stems), on the classes named "1" and "7" (--stages style-search)
    robust_styles: bool = setting(False)
    # robust: the share of the 1s and 7s given a style, as a multiple of robust_p (1: the share
    # of every family; --stages writer-search)
    robust_style_scale: float = setting(1.0, valid=within(0, 1))
    # robust: part of the digit cut off on one side and the rest re-fitted into 20x20, as
    # reading a page the digit was cut by does (--stages style-search)
    robust_crop: bool = setting(False)
    rotation: float = setting(10.0, valid=at_least(0))  # max rotation, degrees (+/-)
    scale_min: float = setting(  # random zoom range
        0.9, valid=Check(lambda v, s: 0 < v <= s.scale_max, "> 0 and <= data.augment.scale_max"))
    scale_max: float = setting(1.1)
    translate: float = setting(0.1, valid=within(0, 1, "[)"))  # max shift, fraction of the side
    shear: float = setting(0.0, valid=at_least(0))  # max shear, degrees
    elastic_alpha: float = setting(0.0, valid=at_least(0))  # elastic strength, pixels (0 = off)
    elastic_sigma: float = setting(4.0, valid=above(0))  # smoothness of the elastic field, pixels
    hflip: bool = setting(False)  # flips and colour jitter: off for digits, on for natural images
    vflip: bool = setting(False)
    brightness: float = setting(0.0, valid=within(0, 1, "[)"))
    contrast: float = setting(0.0, valid=within(0, 1, "[)"))


@dataclass(frozen=True)
class DataConfig(_Section):
    prefix: ClassVar[str] = "data."

    dataset: str = setting(  # a registered dataset name, or an image folder path
        "mnist", "dataset name or image folder", flag=True)
    data_dir: str = setting(  # where the dataset files are ("" = $CNNLAB_DATA_DIR, then cache)
        "", "where the dataset files are", flag=True, metavar="DIR",
        shown="$CNNLAB_DATA_DIR, then ~/.cache/cnnlab/NAME")
    val_fraction: float = setting(  # stratified validation split (5,000 of MNIST's 60,000)
        1 / 12, "validation split", valid=within(0, 1, "[)"), flag=True,
        shown="{:.4f}, 5,000 of 60,000")
    # how validation is held out: stratified by class, or writer (MNIST: whole NIST writers,
    # from the QMNIST labels, so validation measures new writers as the test split does)
    val_split: str = setting("stratified", choices=("stratified", "writer"))
    image_size: int = setting(  # input size, square (0 = the data's own: 28 for MNIST, a folder's)
        0, "train at NxN", valid=at_least(0, ">= 0 (0 = the data's own size)"), flag=True,
        metavar="N", shown="the data's own size: 28 for MNIST, a folder's common image size, at "
                           "most 224 on the longer side")
    channels: int = setting(  # 1 = grayscale, 3 = RGB, 0 = infer from the data
        0, valid=one_of(0, 1, 3, expected="0 (infer), 1 or 3"))
    # how image files become input: "" = auto (mnist-digits for MNIST, resize otherwise),
    # mnist-digits (bring each digit to MNIST form) or resize (the whole image, resized)
    preprocess: str = setting(
        "", "how image files become input: mnist-digits brings each digit to MNIST form, "
            "resize takes the whole image; recorded in the checkpoint for predict and serve",
        valid=one_of("", "mnist-digits", "resize",
                     expected="one of mnist-digits, resize, or empty for auto"),
        flag=True, choices=("mnist-digits", "resize"),
        shown="mnist-digits for MNIST itself, resize for folders")
    test_fraction: float = setting(  # a folder without test/: the seeded, stratified test split
        0.2, "an image folder without test/: the share held out as the test split, stratified "
             "and seeded", valid=within(0, 1, "()"), flag=True)
    limit: int = setting(  # train on a stratified subset of this many images (0 = all)
        0, "use a stratified subset of N training images", valid=at_least(0, ">= 0 (0 = all)"),
        flag=True, metavar="N", shown="all")
    augment: AugmentSettings = field(default_factory=AugmentSettings)


@dataclass(frozen=True)
class ModelConfig(_Section):
    prefix: ClassVar[str] = "model."

    name: str = setting("paper-cnn", "model name (see `cnnlab models`)", flag="model")
    # passed to the model builder, which checks them (training.loop.check_model_settings)
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimConfig(_Section):
    prefix: ClassVar[str] = "optim."

    optimizer: str = setting("adam", "optimizer", flag=True, choices=("adam", "adamw", "sgd"))
    lr: float = setting(1e-3, "peak learning rate", valid=above(0, "a positive number"),
                        flag=True)
    weight_decay: float = setting(0.0, "weight decay (not on biases and norm weights)",
                                  valid=at_least(0), flag=True)
    momentum: float = setting(  # sgd momentum (adam, adamw: beta1)
        0.9, "SGD momentum / Adam beta1", valid=within(0, 1, "[)"), flag=True)
    nesterov: bool = setting(True)  # sgd only
    scheduler: str = setting("none", "learning-rate schedule", flag=True,
                             choices=("none", "step", "cosine", "onecycle", "plateau"))
    warmup_epochs: float = setting(0.0, valid=at_least(0))  # linear warm-up before cosine
    step_size: int = setting(10, valid=at_least(1, "an integer >= 1"))  # step: epochs per decay
    gamma: float = setting(0.1, valid=within(0, 1, "(]"))  # step/plateau: decay factor
    patience: int = setting(2, valid=at_least(0))  # plateau: epochs without gain before decay
    pct_start: float = setting(0.25, valid=within(0, 1, "()"))  # onecycle: warm-up share
    # cosine/onecycle: the lr at the end as a fraction of the peak
    final_lr_fraction: float = setting(0.0, valid=within(0, 1, "[]"))


@dataclass(frozen=True)
class AdversarialSettings(_Section):
    """Adversarial training (cnnlab.training.adversarial): each training batch is replaced by
    adversarial examples of the model being trained, found in [0, 1] pixel space."""

    prefix: ClassVar[str] = "train.adversarial."

    method: str = setting(  # none | fgsm-rs (Wong et al. 2020) | pgd (Madry et al. 2018) | trades
        "none", "train on adversarial examples: fgsm-rs (fast FGSM with random start, Wong et "
                "al. 2020), pgd (Madry et al. 2018) or trades (Zhang et al. 2019: clean "
                "cross-entropy plus beta x KL to the adversarial prediction)",
        flag="adversarial", choices=("none", "fgsm-rs", "pgd", "trades"))
    eps: float = setting(  # L-inf radius on the [0, 1] pixel scale (MNIST's standard: 0.3)
        0.3, "L-inf radius of the training attack on the [0, 1] pixel scale",
        valid=within(0, 1), flag=True)
    steps: int = setting(  # pgd, trades: attack steps per batch (fgsm-rs takes one)
        10, "pgd, trades: attack steps per training batch", valid=at_least(1, "an integer >= 1"),
        flag=True)
    alpha: float = setting(  # step size on the [0, 1] scale; 0 = the method's own
        0.0, "attack step size on the [0, 1] pixel scale", valid=within(0, 1), flag=True,
        shown="1.25 x eps for fgsm-rs (Wong et al.), 2.5 x eps / steps for pgd (Madry et al.) "
              "and trades")
    # the radius grows linearly from 0 to eps over this many epochs (0 = eps from the start)
    eps_warmup_epochs: float = setting(0.0, valid=at_least(0))
    # trades: the weight of the KL term against the clean cross-entropy (Zhang et al.: 6)
    beta: float = setting(6.0, valid=at_least(0))


@dataclass(frozen=True)
class TrainConfig(_Section):
    prefix: ClassVar[str] = "train."

    epochs: int = setting(20, "passes over the training split",
                          valid=at_least(1, "an integer >= 1"), flag=True)
    batch_size: int = setting(64, "training batch size", valid=at_least(1, "an integer >= 1"),
                              flag=True)
    eval_batch_size: int = setting(1000, valid=at_least(1, "an integer >= 1"))
    label_smoothing: float = setting(0.0, "label smoothing of the cross-entropy loss",
                                     valid=within(0, 1, "[)"), flag=True)
    ema: float = setting(  # EMA decay of the weights (0 = off); evaluation then uses the EMA
        0.0, "keep an exponential moving average of the weights with this decay, e.g. 0.999, "
             "and evaluate it", valid=Check(lambda v, _: 0 <= v < 1, "in [0, 1) (0 = off)"),
        flag=True, metavar="DECAY", shown="off")
    early_stopping: int = setting(  # stop after this many epochs without validation gain
        0, "stop after this many epochs without validation gain",
        valid=at_least(0, ">= 0 (0 = off)"), flag=True, metavar="EPOCHS", shown="off")
    # the smallest validation-accuracy gain that counts as a gain (for early_stopping)
    min_delta: float = setting(0.0, valid=within(0, 1, "[)"))
    seed: int = setting(0, "seed of everything random in the run", flag=True, group="run",
                        valid=within(0, 2**32 - 1, "[]"))  # what every generator accepts
    device: str = setting(  # auto | cpu | cuda | cuda:N
        "auto", "auto | cpu | cuda | cuda:N; auto picks CUDA when present", flag=True,
        group="run")
    amp: str = setting("auto", choices=("auto", "on", "off"))  # mixed precision: auto (on for
    # CUDA) | on | off; on the CPU it means bf16
    channels_last: str = setting("auto", choices=("auto", "on", "off"))  # auto: on for CUDA
    threads: int = setting(  # torch threads on CPU (0 = torch's default)
        0, "CPU threads for torch", valid=at_least(0, ">= 0 (0 = default)"), flag=True,
        group="run", shown="torch's choice")
    adversarial: AdversarialSettings = field(default_factory=lambda: AdversarialSettings())


@dataclass(frozen=True)
class Config(_Section):
    recipe: str = ""  # the recipe this config started from, if any
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        # model kwargs live next to the name in the [model] table
        d["model"] = {"name": self.model.name, **self.model.kwargs}
        return d

    def validate(self) -> Self:
        """Check every setting's type and range, and the recipe; return self.

        Raises:
            SettingError: a value out of range, with the key and the accepted range.
            ConfigError: an unknown recipe.
        """
        super().validate()
        if self.recipe and self.recipe not in RECIPES:
            raise ConfigError(unknown_name("recipe", self.recipe, list(RECIPES)))
        return self


# --- recipes ----------------------------------------------------------------------------------
# Each recipe is a partial config (nested dict) applied on top of the defaults.

RECIPES: dict[str, dict[str, Any]] = {
    # Fastest to 99 % on 2 CPU cores: one pass of a small plain conv-BN net over a stratified
    # 45,000 of the 60,000 training images (no validation split), bf16 autocast and
    # channels_last (both measured faster on the CPU), Adam with a one-cycle schedule, label
    # smoothing. Each pooled stage pools before its BN and ReLU (pool_first). Chosen on
    # validation in the recorded search (benchmarks/results/fast_search.json): pool_first 0.81x
    # the time and +0.08 points; then 45,000 images 0.79x the time, still above the first
    # recipe's validation accuracy (the fastest candidate that was); then the convs see the
    # centred 24x24 of each image only (model.crop): 0.76-0.81x the time, the same accuracy.
    "fast": {
        "model": {"name": "convnet", "pool_first": True, "crop": 24},
        "data": {"val_fraction": 0.0, "limit": 45_000},
        "optim": {"optimizer": "adam", "lr": 6e-3, "scheduler": "onecycle", "pct_start": 0.25},
        "train": {"epochs": 1, "batch_size": 128, "label_smoothing": 0.1, "amp": "on",
                  "channels_last": "on"},
    },
    # The most accurate single model we can train in reasonable time on 2 CPU cores: a
    # residual CNN (stem 32 at 28x28, then max pool + block 64, max pool + block 128), random
    # affine augmentation, AdamW with one-cycle, label smoothing and an EMA of the weights;
    # like `fast`, it trains on all 60,000 images for a fixed schedule (no validation split).
    "default": {
        "model": {"name": "resnet", "widths": [32, 64, 128], "blocks": [0, 1, 1],
                  "downsample": "maxpool", "dropout": 0.1},
        "data": {"val_fraction": 0.0,
                 "augment": {"enabled": True, "rotation": 10.0, "scale_min": 0.9,
                             "scale_max": 1.1, "translate": 0.1, "shear": 8.0}},
        "optim": {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 5e-2,
                  "scheduler": "onecycle", "pct_start": 0.2},
        "train": {"epochs": 20, "batch_size": 128, "label_smoothing": 0.1, "ema": 0.999,
                  "amp": "on", "channels_last": "on"},
    },
    # Corruption robustness (issue 15): the default model, with the robust augmentation (a
    # wider affine, then noise, blur, thinner/thicker strokes, stray strokes and occlusion,
    # each family on 30 % of the samples: 0.3 beat 0.5, and occlusion on beat off, on MNIST-C
    # validation accuracy in the searches of benchmarks/bench_robust_training.py; thin outlines
    # beat the band and a 30-degree rotation in its outline-search; the digit styles, on a third
    # of that share of the 1s and 7s, and re-fitted crops won its writer-search, the worst
    # margin against the three targets on validation: flagged 1s 74 -> 100 %), 30
    # epochs (15 minutes of the 30 the robust target allows on 2 cores).
    "robust": {
        "model": {"name": "resnet", "widths": [32, 64, 128], "blocks": [0, 1, 1],
                  "downsample": "maxpool", "dropout": 0.1},
        "data": {"val_fraction": 0.0,
                 "augment": {"enabled": True, "kind": "robust", "robust_p": 0.3,
                             "robust_outline": "thin", "robust_styles": True,
                             "robust_style_scale": 1 / 3, "robust_crop": True,
                             "rotation": 15.0,
                             "scale_min": 0.85, "scale_max": 1.15,
                             "translate": 0.15, "shear": 15.0}},
        "optim": {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 5e-2,
                  "scheduler": "onecycle", "pct_start": 0.2},
        "train": {"epochs": 30, "batch_size": 128, "label_smoothing": 0.1, "ema": 0.999,
                  "amp": "on", "channels_last": "on"},
    },
    # L-inf adversarial robustness at eps 0.3 (issue 15): PGD training (Madry et al. 2018) of
    # the default model, the radius ramped up over the first 2 epochs (a full radius from the
    # start stalls training on MNIST), no label smoothing (it masks gradients) and an EMA.
    "adversarial": {
        "model": {"name": "resnet", "widths": [32, 64, 128], "blocks": [0, 1, 1],
                  "downsample": "maxpool"},
        "data": {"val_fraction": 0.0},
        "optim": {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 5e-2,
                  "scheduler": "onecycle", "pct_start": 0.2},
        "train": {"epochs": 12, "batch_size": 128, "ema": 0.999, "amp": "on",
                  "channels_last": "on",
                  "adversarial": {"method": "pgd", "eps": 0.3, "steps": 7, "alpha": 0.1,
                                  "eps_warmup_epochs": 2.0}},
    },
    # A Vision Transformer trained from scratch in 45 minutes on 2 CPU cores (issue 19): the
    # `vit` model (49 tokens of width 64, 6 blocks, 4 heads) with a convolutional stem in place
    # of the 4x4 patch projection (Xiao et al. 2021), the default recipe's augmentation, AdamW
    # with one-cycle and label smoothing; fp32 (bf16 autocast ran this model at about half the
    # fp32 speed on the CPU). No EMA: an EMA of this model's weights (0.999, and 0.99 on short
    # runs) predicted far worse than the weights themselves (36 % on validation after 6
    # epochs). Settings from the recorded search on validation,
    # benchmarks/results/vit_search.json.
    "vit": {
        "model": {"name": "vit", "stem": "conv"},
        "data": {"val_fraction": 0.0,
                 "augment": {"enabled": True, "rotation": 10.0, "scale_min": 0.9,
                             "scale_max": 1.1, "translate": 0.1, "shear": 8.0}},
        "optim": {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 5e-2,
                  "scheduler": "onecycle", "pct_start": 0.2},
        "train": {"epochs": 35, "batch_size": 128, "label_smoothing": 0.1},
    },
    # The paper's Table III best values: Adam, lr 0.001, batch 64, 20 epochs, 3x3 filters.
    "paper": {
        "model": {"name": "paper-cnn", "kernel_size": 3},
        "optim": {"optimizer": "adam", "lr": 1e-3, "scheduler": "none"},
        "train": {"epochs": 20, "batch_size": 64},
    },
}

RECIPE_HELP: dict[str, str] = {
    "fast": "fastest to 99 %: convnet (pool first), one pass over 45k images, Adam one-cycle",
    "default": "the most accurate: residual CNN, augmentation, EMA, AdamW one-cycle, 20 epochs",
    "paper": "the paper's Table III best values: paper-cnn, Adam lr 0.001, batch 64, 20 epochs",
    "robust": "corruption-robust: the default model with --augment robust (noise, blur, "
              "strokes, thin outlines, occlusion, styled 1s and 7s, cut digits), 30 epochs",
    "adversarial": "L-inf eps 0.3 adversarial robustness: the default model, PGD-7 training",
    "vit": "a Vision Transformer from scratch: conv stem, 6 blocks of width 64, augmentation, "
           "AdamW one-cycle, 35 epochs",
}


# --- merging ----------------------------------------------------------------------------------

def _model_updates(updates: Any) -> tuple[str | None, dict[str, Any]]:
    """A ``[model]`` table as (the model name it gives or None, the builder kwargs it gives)."""
    if not isinstance(updates, dict):
        raise SettingError("model", "a table", updates)
    name = updates.get("name")
    if name is not None and not isinstance(name, str):
        raise SettingError("model.name", "a string", name)
    kwargs: dict[str, Any] = {}
    for key, value in updates.items():
        if key == "kwargs" and isinstance(value, dict):
            kwargs.update(value)
        elif key != "name":
            kwargs[key] = value
    return name, kwargs


def _merge(obj: Any, updates: dict[str, Any], prefix: str) -> Any:
    """Return a copy of dataclass ``obj`` with nested ``updates`` applied and type-checked."""
    if isinstance(obj, ModelConfig):
        name, kwargs = _model_updates(updates)
        if name is None or name == obj.name:
            return ModelConfig(obj.name, {**obj.kwargs, **kwargs})
        return ModelConfig(name, kwargs)  # another model: the old model's kwargs don't apply
    known = {f.name: f for f in dataclasses.fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in updates.items():
        path = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(unknown_name("config key", path, [f"{prefix}{k}" for k in known],
                                             prefix=prefix))
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise SettingError(path, "a table", value)
            changes[key] = _merge(current, value, f"{path}.")
        else:
            changes[key] = _coerce(path, value, current)
    return dataclasses.replace(obj, **changes)


def _coerce(path: str, value: Any, current: Any) -> Any:
    """Coerce ``value`` to the type of the field's current value (bool, int, float, str).

    Raises:
        SettingError: a value that is not of that type and does not convert losslessly.
    """
    kind = type(current)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    raise SettingError(path, f"a {kind.__name__}", value)


def _parse_scalar(text: str) -> Any:
    """Parse a ``--set`` value the way TOML would, falling back to a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """Turn ``["optim.lr=0.01", "model.dropout=0.2"]`` into a nested dict.

    Raises:
        ConfigError: an item without ``=`` or with an empty key.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"Each override must be KEY=VALUE with a dotted key, such as "
                              f"optim.lr=0.01. Got {item!r} instead.")
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"the override {item!r} conflicts with an earlier override "
                                  f"of {p!r}")
        node[leaf] = _parse_scalar(text.strip())
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into a nested dict.

    Raises:
        ConfigError: the file is missing or not valid TOML.
    """
    p = Path(path)
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(p)!r} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {e}") from e


def resolve_config(*layers: dict[str, Any] | None, recipe: str | None = None) -> Config:
    """Build a validated :class:`Config` from the defaults, a recipe and override layers.

    The recipe is the one named by ``recipe`` or, failing that, by the first layer that sets
    ``recipe``; layers are applied in order, later ones win.

    Model keyword arguments combine across layers whatever layer names the model: a layer's
    ``model.name`` keeps the kwargs that earlier layers gave, so ``--set model.depth=20
    --model resnet`` trains a depth-20 resnet. Only the recipe's own kwargs go with the
    recipe's model (they describe it, and are dropped when a layer picks another model); the
    builder refuses kwargs that do not apply to the model in the end
    (:func:`cnnlab.training.loop.check_model_settings`, run before any data is loaded).

    Raises:
        ConfigError: unknown keys, wrong types, out-of-range values or an unknown recipe.
    """
    layers_ = [dict(layer) for layer in layers if layer]
    name = recipe or next((str(layer["recipe"]) for layer in layers_ if layer.get("recipe")), "")
    cfg = Config()
    if name:
        if name not in RECIPES:
            raise ConfigError(unknown_name("recipe", name, list(RECIPES)))
        cfg = _merge(cfg, RECIPES[name], "")
        cfg = dataclasses.replace(cfg, recipe=name)
    recipe_model = cfg.model
    model_name, model_kwargs = recipe_model.name, {}
    for layer in layers_:
        layer.pop("recipe", None)
        if "model" in layer:
            given_name, given_kwargs = _model_updates(layer.pop("model"))
            model_name = given_name or model_name
            model_kwargs.update(given_kwargs)
        cfg = _merge(cfg, layer, "")
    kept = recipe_model.kwargs if model_name == recipe_model.name else {}
    cfg = dataclasses.replace(cfg, model=ModelConfig(model_name, {**kept, **model_kwargs}))
    return cfg.validate()


def resolve_saved_config(saved: dict[str, Any], *layers: dict[str, Any] | None) -> Config:
    """A run's saved config (its ``config.toml``, a checkpoint's ``config``) under ``layers``.

    The recipe it names is not applied again: a setting added since the run was saved takes
    its default, which reproduces what training did before the setting existed, where the
    recipe's value today may not (the ``robust`` recipe has had thin outlines, digit styles
    and crops added since the packaged model was trained without them).

    Raises:
        ConfigError: unknown keys, wrong types or out-of-range values.
    """
    base = dict(saved)
    name = str(base.pop("recipe", "") or "")
    cfg = resolve_config(base, *layers)
    return dataclasses.replace(cfg, recipe=name).validate() if name in RECIPES else cfg


def resolve_run_config(*, recipe: str | None = None,
                       file: str | Path | dict[str, Any] | None = None,
                       overrides: Sequence[str] = (), flags: dict[str, Any] | None = None,
                       resume_dir: str | Path | None = None, kind: str = "run") -> Config:
    """The settings of a training run, as ``cnnlab train``, ``cnnlab cv`` and
    ``cnnlab.train()`` take them: defaults < ``recipe`` < ``file`` (a TOML path or a nested
    dict) < ``overrides`` (``"key=value"`` items) < ``flags`` (flag names as in
    :data:`FLAG_KEYS`; ``None`` = not given). With ``resume_dir`` the config that run saved
    (``config.toml``) is the base, under everything else.

    Raises:
        ConfigError: a ``resume_dir`` without ``config.toml`` (``kind`` names what it should
            be: "run", "cross-validation"), an unreadable file, or invalid settings (a
            :class:`SettingError` names the setting).
    """
    layers: list[dict[str, Any]] = [
        load_config_file(file) if isinstance(file, str | Path) else dict(file or {}),
        parse_set(overrides), flags_layer(flags or {})]
    if resume_dir is not None:
        saved = Path(resume_dir) / "config.toml"
        if not saved.is_file():
            raise ConfigError(f"cannot resume: {saved} does not exist; is "
                              f"{str(resume_dir)!r} a {kind} directory?")
        if recipe is None:  # the run as it was saved, not as its recipe reads today
            return resolve_saved_config(load_config_file(saved), *layers)
        layers.insert(0, load_config_file(saved))
    return resolve_config(*layers, recipe=recipe)


# --- writing TOML -----------------------------------------------------------------------------

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return {True: "inf", False: "-inf"}[v > 0] if math.isinf(v) else "nan"
        return repr(v)
    if isinstance(v, str):
        escaped = v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if v is None:
        raise ConfigError("TOML has no null value; leave the key out instead")
    raise ConfigError(f"cannot write {type(v).__name__} value {v!r} to TOML")


def dump_toml(data: dict[str, Any]) -> str:
    """Serialise a nested dict of scalars, lists and tables as TOML."""
    lines: list[str] = []

    def table(d: dict[str, Any], name: str) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in d.items() if isinstance(v, dict)}
        if name and (scalars or not tables):
            lines.append(f"\n[{name}]")
        for k, v in scalars.items():
            lines.append(f"{k} = {_toml_value(v)}")
        for k, v in tables.items():
            table(v, f"{name}.{k}" if name else k)

    table(data, "")
    return "\n".join(lines).lstrip("\n") + "\n"


# --- flags ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Flag:
    """A CLI flag and keyword of ``cnnlab.train()``, generated from a field's metadata."""

    name: str  # the keyword, "weight_decay"; the CLI spells it --weight-decay
    key: str  # the setting it sets, "optim.weight_decay"
    default: Any  # the field's default
    help: str
    group: str  # the --help group
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    shown: str = ""  # how --help states the default, if not as the bare value
    # a bool flag that may also take one of these values (--augment robust): the value turns
    # the setting on and sets value_key (a dotted key) to it
    values: tuple[str, ...] = ()
    value_key: str = ""

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def type(self) -> type:
        return type(self.default)

    def help_text(self) -> str:
        """The help with the default, as ``--help`` shows it (argparse's ``%`` escaped)."""
        if self.shown:
            default = self.shown.format(self.default)
        elif isinstance(self.default, bool):
            default = "on" if self.default else "off"
        else:
            default = str(self.default)
        return f"{self.help} (default: {default})".replace("%", "%%")


# the order of the flags in --help, and their groups unless a field names another
_FLAG_SECTIONS = {"model": "model and data", "data": "model and data",
                  "train": "optimisation", "optim": "optimisation"}


def _flags(obj: Any, prefix: str, group: str) -> list[Flag]:
    flags: list[Flag] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            flags += _flags(value, f"{prefix}{f.name}.", group)
        elif f.metadata.get("flag"):
            m = f.metadata
            flags.append(Flag(
                name=f.name if m["flag"] is True else m["flag"], key=prefix + f.name,
                default=value, help=m["help"], group=m["group"] or group,
                choices=m["choices"], metavar=m["metavar"], shown=m["shown"],
                values=m["values"],
                value_key=f"{prefix}{m['value_key']}" if m["value_key"] else ""))
    return flags


FLAGS: tuple[Flag, ...] = tuple(
    flag for section, group in _FLAG_SECTIONS.items()
    for flag in _flags(getattr(Config(), section), f"{section}.", group))

# the flag names (keywords of cnnlab.train()) and the setting each one sets
FLAG_KEYS: dict[str, str] = {flag.name: flag.key for flag in FLAGS}
_FLAGS_BY_NAME: dict[str, Flag] = {flag.name: flag for flag in FLAGS}


def flags_layer(values: dict[str, Any]) -> dict[str, Any]:
    """Nested config layer from flag values; ``None`` means "not given" and is skipped.

    Raises:
        ConfigError: a name that is not a known flag.
    """
    layer: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name not in FLAG_KEYS:
            raise ConfigError(unknown_name("option", name, list(FLAG_KEYS)))
        flag = _FLAGS_BY_NAME[name]
        items = [(flag.key, value)]
        if flag.values and isinstance(value, str):  # --augment robust: on, and of that kind
            if value not in flag.values:
                raise ConfigError(unknown_name(f"value of the {name!r} option", value,
                                               list(flag.values)))
            items = [(flag.key, True), (flag.value_key, value)]
        for key, item in items:
            *parents, leaf = key.split(".")
            node = layer
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = item
    return layer
