"""Training configuration: frozen dataclasses, TOML files, ``--set`` overrides and recipes.

Precedence, lowest first: field defaults < recipe < config file (``-c``) < ``--set a.b=v`` <
explicit flags. Unknown keys are rejected with a "did you mean". The resolved config is
written to every run directory as ``config.toml`` and stored in checkpoints, so a run can be
reproduced with ``cnnlab train -c runs/NAME/config.toml``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.errors import ConfigError

__all__ = [
    "FLAG_KEYS",
    "RECIPES",
    "AugmentSettings",
    "Config",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "dump_toml",
    "flags_layer",
    "load_config_file",
    "parse_set",
    "resolve_config",
]


@dataclass(frozen=True)
class AugmentSettings:
    enabled: bool = False  # batched random affine on every training batch
    rotation: float = 10.0  # max rotation, degrees (+/-)
    scale_min: float = 0.9  # random zoom range
    scale_max: float = 1.1
    translate: float = 0.1  # max shift as a fraction of width/height
    shear: float = 0.0  # max shear, degrees
    elastic_alpha: float = 0.0  # elastic distortion strength in pixels (0 = off)
    elastic_sigma: float = 4.0  # smoothness of the elastic field, pixels
    hflip: bool = False  # flips and colour jitter: off for digits, on for natural images
    vflip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist"  # a registered dataset name, or an image folder path
    data_dir: str = ""  # where the dataset files are ("" = $CNNLAB_DATA_DIR, then ~/.cache/cnnlab)
    val_fraction: float = 1 / 12  # stratified validation split (5,000 of MNIST's 60,000)
    image_size: int = 0  # input size, square (0 = the data's own: 28 for MNIST, a folder's)
    channels: int = 0  # 1 = grayscale, 3 = RGB, 0 = infer from the data
    # how image files become input: "" = auto (mnist-digits for MNIST, resize otherwise),
    # mnist-digits (bring each digit to MNIST form) or resize (the whole image, resized)
    preprocess: str = ""
    test_fraction: float = 0.2  # a folder without test/: the seeded, stratified test split
    limit: int = 0  # train on a stratified subset of this many images (0 = all); for quick runs
    augment: AugmentSettings = field(default_factory=AugmentSettings)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "paper-cnn"  # see `cnnlab models`
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the model builder


@dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd momentum (adam, adamw: beta1)
    nesterov: bool = True  # sgd only
    scheduler: str = "none"  # none | step | cosine | onecycle | plateau
    warmup_epochs: float = 0.0  # linear warm-up before cosine
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.1  # step/plateau: decay factor
    patience: int = 2  # plateau: epochs without improvement before decaying
    pct_start: float = 0.25  # onecycle: fraction of steps spent warming up
    final_lr_fraction: float = 0.0  # cosine/onecycle: lr at the end as a fraction of peak


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 64
    eval_batch_size: int = 1000
    label_smoothing: float = 0.0
    ema: float = 0.0  # EMA decay of the weights (0 = off); evaluation then uses the EMA weights
    early_stopping: int = 0  # stop after this many epochs without validation gain (0 = off)
    min_delta: float = 0.0  # smallest validation-accuracy gain that counts as a gain
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # mixed precision: auto (on for CUDA) | on | off; on CPU it means bf16
    channels_last: str = "auto"  # auto (on for CUDA) | on | off
    threads: int = 0  # torch threads on CPU (0 = torch's default)


@dataclass(frozen=True)
class Config:
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

    def validate(self) -> Config:
        """Check value ranges; return self.

        Raises:
            ConfigError: a value out of range, with the key and the accepted range.
        """
        t, o, d = self.train, self.optim, self.data
        checks: list[tuple[str, Any, bool, str]] = [
            ("train.epochs", t.epochs, t.epochs >= 1, "an integer >= 1"),
            ("train.batch_size", t.batch_size, t.batch_size >= 1, "an integer >= 1"),
            ("train.eval_batch_size", t.eval_batch_size, t.eval_batch_size >= 1, "an integer >= 1"),
            ("train.label_smoothing", t.label_smoothing, 0 <= t.label_smoothing < 1, "in [0, 1)"),
            ("train.ema", t.ema, 0 <= t.ema < 1, "in [0, 1) (0 = off)"),
            ("train.early_stopping", t.early_stopping, t.early_stopping >= 0, ">= 0 (0 = off)"),
            ("train.threads", t.threads, t.threads >= 0, ">= 0 (0 = default)"),
            ("train.amp", t.amp, t.amp in ("auto", "on", "off"), "one of auto, on, off"),
            ("train.channels_last", t.channels_last, t.channels_last in ("auto", "on", "off"),
             "one of auto, on, off"),
            ("optim.lr", o.lr, o.lr > 0 and math.isfinite(o.lr), "a positive number"),
            ("optim.weight_decay", o.weight_decay, o.weight_decay >= 0, ">= 0"),
            ("optim.momentum", o.momentum, 0 <= o.momentum < 1, "in [0, 1)"),
            ("optim.optimizer", o.optimizer, o.optimizer in ("adam", "adamw", "sgd"),
             "one of adam, adamw, sgd"),
            ("optim.scheduler", o.scheduler,
             o.scheduler in ("none", "step", "cosine", "onecycle", "plateau"),
             "one of none, step, cosine, onecycle, plateau"),
            ("optim.warmup_epochs", o.warmup_epochs, o.warmup_epochs >= 0, ">= 0"),
            ("optim.step_size", o.step_size, o.step_size >= 1, "an integer >= 1"),
            ("optim.gamma", o.gamma, 0 < o.gamma <= 1, "in (0, 1]"),
            ("optim.patience", o.patience, o.patience >= 0, ">= 0"),
            ("optim.pct_start", o.pct_start, 0 < o.pct_start < 1, "in (0, 1)"),
            ("optim.final_lr_fraction", o.final_lr_fraction, 0 <= o.final_lr_fraction <= 1,
             "in [0, 1]"),
            ("data.val_fraction", d.val_fraction, 0 <= d.val_fraction < 1, "in [0, 1)"),
            ("data.image_size", d.image_size, d.image_size >= 0,
             ">= 0 (0 = the data's own size)"),
            ("data.preprocess", d.preprocess, d.preprocess in ("", "mnist-digits", "resize"),
             "one of mnist-digits, resize, or empty for auto"),
            ("data.test_fraction", d.test_fraction, 0 < d.test_fraction < 1, "in (0, 1)"),
            ("data.channels", d.channels, d.channels in (0, 1, 3), "0 (infer), 1 or 3"),
            ("data.limit", d.limit, d.limit >= 0, ">= 0 (0 = all)"),
        ]
        a = d.augment
        checks += [
            ("data.augment.rotation", a.rotation, a.rotation >= 0, ">= 0"),
            ("data.augment.scale_min", a.scale_min, 0 < a.scale_min <= a.scale_max,
             "> 0 and <= data.augment.scale_max"),
            ("data.augment.translate", a.translate, 0 <= a.translate < 1, "in [0, 1)"),
            ("data.augment.shear", a.shear, a.shear >= 0, ">= 0"),
            ("data.augment.elastic_alpha", a.elastic_alpha, a.elastic_alpha >= 0, ">= 0"),
            ("data.augment.elastic_sigma", a.elastic_sigma, a.elastic_sigma > 0, "> 0"),
            ("data.augment.brightness", a.brightness, 0 <= a.brightness < 1, "in [0, 1)"),
            ("data.augment.contrast", a.contrast, 0 <= a.contrast < 1, "in [0, 1)"),
        ]
        for key, value, ok, expected in checks:
            if not ok:
                raise ConfigError(f"The '{key}' setting must be {expected}. Got {value!r} instead.")
        if self.recipe and self.recipe not in RECIPES:
            raise ConfigError(_unknown("recipe", self.recipe, list(RECIPES)))
        return self


# --- recipes ----------------------------------------------------------------------------------
# Each recipe is a partial config (nested dict) applied on top of the defaults.

RECIPES: dict[str, dict[str, Any]] = {
    # Fastest to 99 % on 2 CPU cores: one epoch of a small plain conv-BN net over all 60,000
    # images (no validation split), bf16 autocast and channels_last (both measured faster on
    # the CPU), Adam with a one-cycle schedule, label smoothing.
    "fast": {
        "model": {"name": "convnet"},
        "data": {"val_fraction": 0.0},
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
    # The paper's Table III best values: Adam, lr 0.001, batch 64, 20 epochs, 3x3 filters.
    "paper": {
        "model": {"name": "paper-cnn", "kernel_size": 3},
        "optim": {"optimizer": "adam", "lr": 1e-3, "scheduler": "none"},
        "train": {"epochs": 20, "batch_size": 64},
    },
}

RECIPE_HELP: dict[str, str] = {
    "fast": "fastest to 99 %: convnet, one epoch over all 60k images, Adam one-cycle",
    "default": "the most accurate: residual CNN, augmentation, EMA, AdamW one-cycle, 20 epochs",
    "paper": "the paper's Table III best values: paper-cnn, Adam lr 0.001, batch 64, 20 epochs",
}


# --- merging ----------------------------------------------------------------------------------

def _unknown(kind: str, name: str, known: list[str], prefix: str = "") -> str:
    """"unknown ... 'x'; did you mean ...?" comparing names without their shared ``prefix``."""
    close = difflib.get_close_matches(name.removeprefix(prefix),
                                      [k.removeprefix(prefix) for k in known], n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(prefix + c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}{hint} (known: {', '.join(sorted(known))})"


def _merge(obj: Any, updates: dict[str, Any], prefix: str) -> Any:
    """Return a copy of dataclass ``obj`` with nested ``updates`` applied and type-checked."""
    if isinstance(obj, ModelConfig):
        kwargs = dict(obj.kwargs)
        name = obj.name
        # the name first: a new model drops the old model's kwargs, not the ones given with it
        for key, value in sorted(updates.items(), key=lambda kv: kv[0] != "name"):
            if key == "name":
                if not isinstance(value, str):
                    raise ConfigError(f"The 'model.name' setting must be a string. Got {value!r}.")
                if value != name:
                    kwargs = {}  # another model's kwargs don't carry over
                name = value
            elif key == "kwargs" and isinstance(value, dict):
                kwargs.update(value)
            else:
                kwargs[key] = value
        return ModelConfig(name=name, kwargs=kwargs)
    known = {f.name: f for f in dataclasses.fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in updates.items():
        path = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(_unknown("config key", path, [f"{prefix}{k}" for k in known], prefix))
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"The '{path}' setting must be a table. Got {value!r} instead.")
            changes[key] = _merge(current, value, f"{path}.")
        else:
            changes[key] = _coerce(path, value, current)
    return dataclasses.replace(obj, **changes)


def _coerce(path: str, value: Any, current: Any) -> Any:
    """Coerce ``value`` to the type of the field's current value (bool, int, float, str)."""
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
    raise ConfigError(
        f"The '{path}' setting must be a {kind.__name__}. Got {value!r} instead."
    )


def _parse_scalar(text: str) -> Any:
    """Parse a ``--set`` value the way TOML would, falling back to a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_set(items: list[str]) -> dict[str, Any]:
    """Turn ``["optim.lr=0.01", "model.dropout=0.2"]`` into a nested dict.

    Raises:
        ConfigError: an item without ``=`` or with an empty key.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise ConfigError(
                f"--set expects KEY=VALUE with a dotted key such as optim.lr=0.01; got {item!r}"
            )
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r} conflicts with an earlier --set of {p!r}")
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

    Raises:
        ConfigError: unknown keys, wrong types, out-of-range values or an unknown recipe.
    """
    layers_ = [dict(layer) for layer in layers if layer]
    name = recipe or next((str(layer["recipe"]) for layer in layers_ if layer.get("recipe")), "")
    cfg = Config()
    if name:
        if name not in RECIPES:
            raise ConfigError(_unknown("recipe", name, list(RECIPES)))
        cfg = _merge(cfg, RECIPES[name], "")
        cfg = dataclasses.replace(cfg, recipe=name)
    for layer in layers_:
        layer.pop("recipe", None)
        cfg = _merge(cfg, layer, "")
    return cfg.validate()


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
# CLI flags and keyword arguments of cnnlab.train(), and the config keys they set.
FLAG_KEYS: dict[str, str] = {
    "model": "model.name",
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "val_fraction": "data.val_fraction",
    "test_fraction": "data.test_fraction",
    "image_size": "data.image_size",
    "preprocess": "data.preprocess",
    "limit": "data.limit",
    "augment": "data.augment.enabled",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "label_smoothing": "train.label_smoothing",
    "ema": "train.ema",
    "early_stopping": "train.early_stopping",
    "seed": "train.seed",
    "device": "train.device",
    "threads": "train.threads",
    "optimizer": "optim.optimizer",
    "lr": "optim.lr",
    "weight_decay": "optim.weight_decay",
    "momentum": "optim.momentum",
    "scheduler": "optim.scheduler",
}


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
            raise ConfigError(_unknown("option", name, list(FLAG_KEYS)))
        *parents, leaf = FLAG_KEYS[name].split(".")
        node = layer
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return layer
