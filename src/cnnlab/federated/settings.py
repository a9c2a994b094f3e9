"""The settings of a federated run, checked once, and the data both sides derive from them.

The settings travel as a JSON file (the ServerApp of the deployment engine runs in a process
of its own and reads it); the server's validation and test splits and the clients' partition
are both derived from them with the run's seed, so a deployed client that rebuilds its
partition gets exactly the simulation's.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.config import Config, resolve_config
from cnnlab.errors import ConfigError, invalid_value, unknown_name
from cnnlab.federated.partition import PartitionSpec, parse_partition, partition_indices
from cnnlab.training.data import PreparedData, prepare_data

__all__ = ["DP_MODES", "STRATEGIES", "FederatedSettings", "client_partition", "load_run_data"]

STRATEGIES = ("fedavg", "fedprox")
# the flag of a setting whose name differs (`cnnlab federated`: --NAME-WITH-DASHES otherwise)
_FLAGS = {"target_accuracy": "--target", "time_budget_s": "time_budget_s",
          "max_wait": "--max-wait", "out": "--out", "client_data": "client_data"}


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))
DP_MODES = ("off", "server", "client")


@dataclass
class FederatedSettings:
    """Everything a federated run is: data, model, partition, strategy, local training, DP."""

    out: str = "runs/federated"
    dataset: str = "mnist"
    data_dir: str = ""
    limit: int = 0  # a stratified subset of the training split before it is partitioned (0: all)
    val_fraction: float = 1 / 12  # held out of the training split on the server: decides
    model: str = "paper-cnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    clients: int = 100
    partition: str = "iid"
    rounds: int = 20
    strategy: str = "fedavg"
    proximal_mu: float = 0.01  # FedProx's mu
    local_epochs: int = 5
    fraction: float = 0.1  # of the clients, sampled each round
    batch_size: int = 10
    lr: float = 0.05
    momentum: float = 0.0
    seed: int = 0
    dp: str = "off"  # off | server | client (Flower's fixed-clipping DP wrappers)
    noise_multiplier: float = 1.0
    clipping_norm: float = 1.0
    delta: float = 1e-5
    target_accuracy: float = 0.99  # the rounds to reach it (test accuracy) are reported
    stop_at_target: bool = False  # end the run at the first round whose test accuracy reaches it
    time_budget_s: float = 0.0  # end the run after the round that passes this (0: no limit)
    round_timeout: float = 600.0  # seconds a round waits for replies, then aggregates what came
    wait_clients: float = 300.0  # seconds the server waits for all clients to connect
    client_data: str = ""  # the simulation's client data file

    def check(self) -> FederatedSettings:
        """Raises ConfigError for any setting out of range (with "did you mean" for names)."""
        if self.strategy not in STRATEGIES:
            raise ConfigError(unknown_name("strategy", self.strategy, STRATEGIES))
        if self.dp not in DP_MODES:
            raise ConfigError(unknown_name("dp mode", self.dp, DP_MODES))
        self.partition_spec  # noqa: B018  # parses, or raises
        ints = {"clients": (1, 100_000), "rounds": (1, 100_000), "local_epochs": (1, 10_000),
                "batch_size": (1, 1_000_000), "limit": (0, 10**9), "seed": (0, 2**31 - 1)}
        for name, (lo, hi) in ints.items():
            value: Any = getattr(self, name)
            if not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(invalid_value(_flag(name), value,
                                                f"an integer in [{lo}, {hi}]", kind="option"))
        floats: dict[str, tuple[float, float, str]] = {
                  "fraction": (0.0, 1.0, "(]"), "lr": (0.0, 100.0, "(]"),
                  "momentum": (0.0, 1.0, "[)"), "proximal_mu": (0.0, 1e6, "[]"),
                  "val_fraction": (0.0, 0.9, "(]"), "noise_multiplier": (0.0, 1e6, "(]"),
                  "clipping_norm": (0.0, 1e6, "(]"), "delta": (0.0, 1.0, "()"),
                  "target_accuracy": (0.0, 1.0, "(]"), "round_timeout": (0.0, 1e7, "(]"),
                  "wait_clients": (0.0, 1e7, "(]"), "time_budget_s": (0.0, 1e9, "[]")}
        for name, (flo, fhi, ends) in floats.items():
            value = getattr(self, name)
            ok = isinstance(value, int | float) and math.isfinite(value) and (
                (flo < value if ends[0] == "(" else flo <= value)
                and (value < fhi if ends[1] == ")" else value <= fhi))
            if not ok:
                expected = f"a finite number in {ends[0]}{flo:g}, {fhi:g}{ends[1]}"
                raise ConfigError(invalid_value(_flag(name), value, expected, kind="option"))
        return self

    @property
    def partition_spec(self) -> PartitionSpec:
        return parse_partition(self.partition)

    @property
    def sampled_clients(self) -> int:
        """Clients trained each round (FedAvg's int(fraction * clients), at least 1)."""
        return max(1, int(self.clients * self.fraction))

    def config(self) -> Config:
        """The run's settings as an ordinary cnnlab config (its model.pt and config.toml)."""
        return resolve_config({
            "data": {"dataset": self.dataset, "data_dir": self.data_dir, "limit": self.limit,
                     "val_fraction": self.val_fraction, "augment": {"enabled": False}},
            "model": {"name": self.model, "kwargs": dict(self.model_kwargs)},
            "optim": {"optimizer": "sgd", "lr": self.lr, "momentum": self.momentum},
            "train": {"seed": self.seed, "epochs": self.local_epochs,
                      "batch_size": self.batch_size, "device": "cpu"}})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> FederatedSettings:
        known = {f.name for f in fields(cls)}
        raw = json.loads(Path(path).read_text())
        return cls(**{k: v for k, v in raw.items() if k in known}).check()


_DATA_CACHE: dict[str, tuple[Config, PreparedData]] = {}


def load_run_data(settings: FederatedSettings, *, progress: bool = False
                  ) -> tuple[Config, PreparedData]:
    """The run's config and data (train, the server's validation, test); cached per process
    (the simulation's ServerApp runs in the process that partitioned the data)."""
    key = json.dumps({k: v for k, v in settings.to_dict().items()
                      if k in ("dataset", "data_dir", "limit", "val_fraction", "seed")},
                     sort_keys=True)
    if key not in _DATA_CACHE:
        cfg = settings.config()
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = (cfg, prepare_data(cfg.data, seed=settings.seed, progress=progress))
    cfg, data = _DATA_CACHE[key]
    return settings.config(), data


def _train_writers(settings: FederatedSettings, data: PreparedData) -> np.ndarray:
    """The NIST writer of every image of the training split (the QMNIST labels)."""
    from cnnlab.data.qmnist import load_writers

    if settings.dataset != "mnist":
        raise ConfigError(f"the writer partition needs writer labels, which only mnist has (the "
                          f"QMNIST labels); {settings.dataset} has none: use iid, shards:2 or "
                          "dirichlet:ALPHA")
    assert data.manifest is not None
    indices = np.asarray(data.manifest["splits"]["train"]["indices"], dtype=np.int64)
    writers = load_writers("train", data_dir=settings.data_dir or None)
    return np.asarray(writers.writer)[indices]


def client_partition(settings: FederatedSettings, data: PreparedData) -> list[np.ndarray]:
    """One index array per client into ``data.train``.

    Raises:
        ConfigError, DataError: see :func:`partition_indices`.
    """
    spec = settings.partition_spec
    writers = _train_writers(settings, data) if spec.kind == "writer" else None
    return partition_indices(data.train.targets.numpy(), settings.clients, spec,
                             seed=settings.seed, writers=writers)
