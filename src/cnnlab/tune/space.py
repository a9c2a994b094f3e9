"""Search spaces for ``cnnlab tune``: TOML files with dotted keys into the training config.

A space file::

    # what the search optimises: val_accuracy (maximised), and optionally a second
    # objective for a multi-objective (Pareto) search: latency_ms or params (minimised)
    objectives = ["val_accuracy"]

    [base]                       # settings every trial shares, laid out as a config file
    data.limit = 5000

    [params]                     # what the search varies
    train.batch_size = [32, 64, 128]                       # a choice
    optim.lr = { values = [0.001, 0.01, 0.1], low = 1e-4, high = 0.1, log = true }
    model.depth = { low = 5, high = 15 }                   # an int range (ints in, ints out)
    model.dropout = { low = 0.0, high = 0.5 }              # a float range

A list is a choice for every sampler. A table with ``low`` and ``high`` is a range for the
random and TPE samplers (``log = true`` samples on a log scale, ``step`` sets a grid of the
range); the grid sampler needs ``values``, the points it visits. A table may carry both: the
grid visits ``values`` and the other samplers search the range around them.

Model families name their knobs differently, so a space can say, per family, what its model
knobs are; the study searches ``[params]`` plus the tables of the family it trains::

    [models.convnet]             # the first family listed is the default
    model.depth = [5, 10, 15]
    [models.paper-cnn]           # ``paper-cnn-tiny`` counts as paper-cnn
    model.blocks = [1, 2, 3]

:meth:`SearchSpace.for_model` picks the family's tables, and refuses a family the space has
none for. Built-in spaces (:data:`SPACES`): ``table3``, the paper's Table III, for ``convnet``
and the paper's own ``paper-cnn``, and ``nas``, an architecture search over ``convnet`` (the
default) or ``vit``, ``inception``, ``densenet``, ``mobilenet``, ``efficientnet``.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cnnlab.errors import ConfigError

__all__ = ["OBJECTIVES", "SPACES", "Param", "SearchSpace", "load_space", "model_family", "nest"]

# objective name -> (direction, description)
OBJECTIVES: dict[str, tuple[str, str]] = {
    "val_accuracy": ("maximize", "validation accuracy of the trial's best epoch"),
    "latency_ms": ("minimize", "batch-1 inference latency, median of 100 runs, ms"),
    "params": ("minimize", "number of parameters"),
}

Scalar = bool | int | float | str


@dataclass(frozen=True)
class Param:
    """One searched setting: a choice (``values`` only) or a range (``low``/``high``)."""

    key: str
    values: tuple[Scalar, ...] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False

    @property
    def is_range(self) -> bool:
        return self.low is not None

    @property
    def is_int(self) -> bool:
        return (self.is_range and isinstance(self.low, int) and isinstance(self.high, int)
                and (self.step is None or isinstance(self.step, int)))

    def describe(self) -> str:
        parts = []
        if self.values is not None:
            parts.append("{" + ", ".join(map(str, self.values)) + "}")
        if self.is_range:
            kind = "int" if self.is_int else "float"
            extra = (", log" if self.log else "") + (f", step {self.step}" if self.step else "")
            parts.append(f"{kind} [{self.low}, {self.high}{extra}]")
        return " or ".join(parts)

    def extremes(self) -> list[Scalar]:
        """The values whose validity implies the whole parameter's: every choice, both bounds."""
        out: list[Scalar] = list(self.values or ())
        if self.low is not None and self.high is not None:  # a range: both are set
            out += [self.low, self.high]
        return out


def model_family(model: str) -> str:
    """The family a model name belongs to, for a space's per-family tables: a ``-tiny`` test
    variant is its full model's family (``paper-cnn-tiny`` -> ``paper-cnn``)."""
    return model.removesuffix("-tiny")


@dataclass(frozen=True)
class SearchSpace:
    name: str
    params: tuple[Param, ...]  # what the search varies: shared ones, then ``model``'s family's
    base: dict[str, Any] = field(default_factory=dict)
    objectives: tuple[str, ...] = ("val_accuracy",)
    description: str = ""
    per_model: dict[str, tuple[Param, ...]] = field(default_factory=dict)  # family -> its params
    model: str = ""  # the family whose per_model params are in ``params`` ("" without per_model)

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def grid(self) -> list[dict[str, Scalar]]:
        """Every point of the grid, in a fixed order.

        Raises:
            ConfigError: a parameter without ``values`` (a range only).
        """
        missing = [p.key for p in self.params if p.values is None]
        if missing:
            raise ConfigError(
                f"search space {self.name!r}: the grid sampler needs the points to visit, but "
                f"{', '.join(missing)} only has a range; add values = [...] to it, or use "
                "another sampler (sampler='random' or sampler='tpe')"
            )
        keys = self.keys
        choices = [p.values for p in self.params if p.values is not None]  # all, checked above
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*choices)]

    def with_objectives(self, objectives: tuple[str, ...]) -> SearchSpace:
        return replace(self, objectives=_check_objectives(self.name, list(objectives)))

    def for_model(self, model: str) -> SearchSpace:
        """This space for training ``model``: the shared params plus its family's.

        A space without per-family tables applies to any model (its keys are checked when the
        study starts) and is returned as it is.

        Raises:
            ConfigError: the space has per-family tables, but none for ``model``'s family.
        """
        if not self.per_model:
            return self
        family = model_family(model)
        if family not in self.per_model:
            raise ConfigError(
                f"search space {self.name!r} has model knobs for the families "
                f"{', '.join(self.per_model)}, not for model {model!r}; search one of those "
                f"with it, or write a space file with a [models.{family}] table of {family}'s "
                "own keys"
            )
        own = self.per_model.get(self.model, ())
        shared = self.params[:len(self.params) - len(own)]
        return replace(self, params=shared + self.per_model[family], model=family)


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"optim.lr": 0.01}`` -> ``{"optim": {"lr": 0.01}}``, a config layer."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


_RANGE_KEYS = {"values", "low", "high", "step", "log"}


def _is_param_table(d: dict[str, Any]) -> bool:
    return bool(d) and set(d) <= _RANGE_KEYS and ("values" in d or "low" in d or "high" in d)


def _flatten_params(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not _is_param_table(v):
            out.update(_flatten_params(v, key + "."))
        else:
            out[key] = v
    return out


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _param(space: str, key: str, spec: Any) -> Param:
    where = f"search space {space!r}, parameter {key!r}"
    if "." not in key:
        raise ConfigError(
            f"{where}: keys are dotted paths into the training config, such as optim.lr or "
            "model.depth; got a bare name"
        )
    if isinstance(spec, list):
        spec = {"values": spec}
    if not isinstance(spec, dict):
        raise ConfigError(
            f"{where}: expected a list of choices or a table with low/high (and optionally "
            f"values, step, log); got {spec!r}"
        )
    values = spec.get("values")
    if values is not None:
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: 'values' must be a non-empty list; got {values!r}")
        if any(isinstance(v, list | dict) for v in values):
            raise ConfigError(f"{where}: choices must be numbers, strings or booleans; "
                              f"got {values!r}")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{where}: the choices {values!r} repeat a value")
        values = tuple(values)
    low, high, step, log = spec.get("low"), spec.get("high"), spec.get("step"), spec.get("log",
                                                                                         False)
    if (low is None) != (high is None):
        raise ConfigError(f"{where}: a range needs both 'low' and 'high'; got {spec!r}")
    if low is not None:
        if not (_number(low) and _number(high)):
            raise ConfigError(f"{where}: 'low' and 'high' must be numbers; got {low!r}, {high!r}")
        if not low < high:
            raise ConfigError(f"{where}: 'low' must be below 'high'; got low={low}, high={high}")
        if not isinstance(log, bool):
            raise ConfigError(f"{where}: 'log' must be true or false; got {log!r}")
        if log and low <= 0:
            raise ConfigError(f"{where}: a log-scale range needs low > 0; got low={low}")
        if step is not None and (not _number(step) or step <= 0):
            raise ConfigError(f"{where}: 'step' must be a positive number; got {step!r}")
        if step is not None and log:
            raise ConfigError(f"{where}: give 'step' or 'log = true', not both")
        if not all(map(math.isfinite, (low, high))):
            raise ConfigError(f"{where}: the bounds must be finite; got {low}, {high}")
    elif step is not None or spec.get("log") is not None:
        raise ConfigError(f"{where}: 'step' and 'log' belong to a range (low, high)")
    if values is not None and low is not None and not all(
            _number(v) and low <= v <= high for v in values):
        raise ConfigError(f"{where}: the values {list(values)} must be numbers inside the range "
                          f"[{low}, {high}]")
    if values is None and low is None:
        raise ConfigError(f"{where}: give a list of choices or a range with low and high")
    return Param(key=key, values=values, low=low, high=high, step=step, log=log)


def _check_objectives(space: str, objectives: Any) -> tuple[str, ...]:
    if (not isinstance(objectives, list) or not objectives
            or any(not isinstance(o, str) for o in objectives)):
        raise ConfigError(
            f"search space {space!r}: 'objectives' must be a list of names such as "
            f"[\"val_accuracy\"]; got {objectives!r}"
        )
    for o in objectives:
        if o not in OBJECTIVES:
            raise ConfigError(
                f"search space {space!r}: unknown objective {o!r}; known: "
                + ", ".join(f"{k} ({v[0]})" for k, v in OBJECTIVES.items())
            )
    if objectives[0] != "val_accuracy" or len(objectives) > 2 or len(set(objectives)) != \
            len(objectives):
        raise ConfigError(
            f"search space {space!r}: objectives must be [\"val_accuracy\"] or "
            f"[\"val_accuracy\", \"latency_ms\" or \"params\"]; got {objectives!r}"
        )
    return tuple(objectives)


def space_from_dict(name: str, data: dict[str, Any], description: str = "") -> SearchSpace:
    """Build and check a space from a parsed TOML document.

    Raises:
        ConfigError: unknown top-level keys, empty choices, bad ranges, unknown objectives,
            a per-family key that is also a shared one.
    """
    unknown = set(data) - {"params", "models", "base", "objectives", "description"}
    if unknown:
        raise ConfigError(
            f"search space {name!r}: unknown top-level key(s) {', '.join(sorted(unknown))}; "
            "a space has [params] and/or [models.<family>] tables, and optionally [base], "
            "objectives and description"
        )
    raw = data.get("params", {})
    models = data.get("models", {})
    if not isinstance(models, dict) or not all(isinstance(t, dict) and t
                                               for t in models.values()):
        raise ConfigError(
            f"search space {name!r}: 'models' must hold one non-empty table per model family, "
            f"e.g. [models.paper-cnn] with model.blocks = [1, 2, 3]; got {models!r}"
        )
    if not isinstance(raw, dict) or not (raw or models):
        raise ConfigError(
            f"search space {name!r} has no [params] table; add one, e.g.\n"
            "  [params]\n  optim.lr = [0.001, 0.01]"
        )
    params = tuple(_param(name, k, v) for k, v in _flatten_params(raw).items())
    per_model: dict[str, tuple[Param, ...]] = {}
    for family, table in models.items():
        flat = _flatten_params(table)
        shared = sorted(set(flat) & {p.key for p in params})
        if shared:
            raise ConfigError(
                f"search space {name!r}: {', '.join(shared)} is in both [params] and "
                f"[models.{family}]; keep it in one of them"
            )
        per_model[family] = tuple(_param(name, k, v) for k, v in flat.items())
    default = next(iter(per_model), "")
    base = data.get("base", {})
    if not isinstance(base, dict):
        raise ConfigError(f"search space {name!r}: [base] must be a table of settings")
    objectives = _check_objectives(name, data.get("objectives", ["val_accuracy"]))
    return SearchSpace(name=name, params=params + per_model.get(default, ()), base=base,
                       objectives=objectives,
                       description=str(data.get("description", description)),
                       per_model=per_model, model=default)


# --- built-in spaces --------------------------------------------------------------------------

# MobileNet and EfficientNet share a builder, so they share knobs
_MOBILE_KNOBS: dict[str, Any] = {
    "model.width_mult": [0.5, 0.75, 1.0, 1.5],
    "model.expansion": [2.0, 4.0, 6.0],
    "model.kernel_size": [3, 5],
    "model.se_ratio": [0.0, 0.25],
    "model.activation": ["relu6", "hardswish", "silu"],
}

SPACES: dict[str, dict[str, Any]] = {
    # The paper's Table III: 3^5 = 243 grid points. The ranges around the grid points are what
    # random and TPE search explore. Trials train on a stratified 5,000-image subset and
    # validate on 2,000 held-out images (--set data.limit=0 for all of them).
    # "Number of layers" is each family's depth knob: convnet's weighted layers (the convs and
    # the linear head) take Table III's 5, 10, 15; the paper's own network stacks conv blocks
    # that each halve the image, so 28x28 takes at most 4: its three levels are 1, 2, 3 blocks,
    # Table II's network (2) in the middle.
    "table3": {
        "description": "the paper's Table III: learning rate, batch size, epochs, number of "
                       "layers, filter size (243 grid points; convnet or paper-cnn)",
        "base": {"data": {"limit": 5000, "val_fraction": 2000 / 60000},
                 "train": {"amp": "on", "channels_last": "on"}},
        "params": {
            "optim.lr": {"values": [0.001, 0.01, 0.1], "low": 1e-4, "high": 0.1, "log": True},
            "train.batch_size": [32, 64, 128],
            "train.epochs": {"values": [10, 20, 30], "low": 10, "high": 30},
        },
        "models": {
            "convnet": {
                "model.depth": {"values": [5, 10, 15], "low": 5, "high": 15},
                "model.kernel_size": [3, 5, 7],
            },
            "paper-cnn": {
                "model.blocks": {"values": [1, 2, 3], "low": 1, "high": 3},
                "model.kernel_size": [3, 5, 7],
            },
        },
    },
    # Architecture search, accuracy against batch-1 latency: convnet by default, or the knobs
    # of another family (vit, inception, densenet, mobilenet, efficientnet) with --model.
    "nas": {
        "description": "architecture search, accuracy against batch-1 latency: convnet's "
                       "depth, width, kernel size, residual connections, batch norm, or the "
                       "knobs of vit, inception, densenet, mobilenet, efficientnet; dropout",
        "objectives": ["val_accuracy", "latency_ms"],
        "base": {"data": {"limit": 5000, "val_fraction": 2000 / 60000},
                 "optim": {"optimizer": "adam", "lr": 3e-3, "scheduler": "onecycle"},
                 "train": {"epochs": 3, "amp": "on", "channels_last": "on"}},
        "params": {
            "model.dropout": {"values": [0.0, 0.25, 0.5], "low": 0.0, "high": 0.5},
        },
        "models": {
            "convnet": {
                "model.depth": {"values": [4, 6, 8, 12], "low": 4, "high": 12},
                "model.width": [4, 8, 16, 32],
                "model.kernel_size": [3, 5, 7],
                "model.residual": [False, True],
                "model.batch_norm": [False, True],
            },
            # every width is a multiple of every head count, every patch divides 28
            "vit": {
                "model.depth": {"values": [2, 4, 6, 8], "low": 2, "high": 8},
                "model.width": [32, 64, 96],
                "model.heads": [2, 4],
                "model.patch_size": [4, 7],
                "model.mlp_ratio": [2.0, 4.0],
                "model.pooling": ["cls", "mean"],
            },
            "inception": {
                "model.width": [16, 32, 64],
                "model.factorised": [True, False],
            },
            "densenet": {
                "model.growth_rate": [8, 12, 16, 24],
                "model.layers": {"values": [2, 4, 6], "low": 2, "high": 8},
                "model.compression": [0.5, 1.0],
                "model.bottleneck": [0, 2, 4],
            },
            "mobilenet": _MOBILE_KNOBS,
            "efficientnet": _MOBILE_KNOBS,
        },
    },
}


def load_space(name_or_path: str, model: str | None = None) -> SearchSpace:
    """A built-in space by name, or a TOML file; for ``model`` if given (see
    :meth:`SearchSpace.for_model`), else for the first family it has tables for.

    Raises:
        ConfigError: unknown name, unreadable file, an invalid space, or a space with
            per-family tables but none for ``model``.
    """
    if name_or_path in SPACES:
        space = space_from_dict(name_or_path, SPACES[name_or_path])
        return space if model is None else space.for_model(model)
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(
            f"search space {name_or_path!r} is neither a built-in space ({', '.join(SPACES)}) "
            "nor a "
            "TOML file; see `cnnlab tune -h` for the file format"
        )
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read search space {path}: {e}") from e
    space = space_from_dict(path.stem, data)
    return space if model is None else space.for_model(model)
