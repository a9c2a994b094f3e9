"""How a training split is divided among federated clients.

- ``iid``: a seeded shuffle cut into equal parts;
- ``shards:K``: McMahan et al.'s pathological non-IID split (2017): the images sorted by label,
  cut into ``clients * K`` equal shards, ``K`` random shards per client (K=2: most clients
  hold two digits);
- ``dirichlet:ALPHA``: per class, the clients' shares drawn from Dirichlet(ALPHA) (small
  ALPHA: few classes per client);
- ``writer``: whole NIST writers (the QMNIST labels): each client holds the digits of one or
  more real writers, the natural non-IID split of MNIST.

Every function returns one index array per client into the training split, and refuses a
split that would leave a client without data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cnnlab.errors import ConfigError, DataError, unknown_name

__all__ = ["PARTITIONS", "PartitionSpec", "parse_partition", "partition_indices"]

PARTITIONS = ("iid", "shards", "dirichlet", "writer")
_DIRICHLET_TRIES = 20  # fresh draws before a Dirichlet split that leaves a client empty fails


@dataclass(frozen=True)
class PartitionSpec:
    """A parsed ``--partition``: the kind and its one parameter (shards per client, alpha)."""

    kind: str
    shards: int = 2
    alpha: float = 0.5

    def __str__(self) -> str:
        return {"shards": f"shards:{self.shards}",
                "dirichlet": f"dirichlet:{self.alpha:g}"}.get(self.kind, self.kind)


def parse_partition(text: str) -> PartitionSpec:
    """``iid``, ``shards:K``, ``dirichlet:ALPHA`` or ``writer``.

    Raises:
        ConfigError: an unknown kind (with "did you mean"), or a parameter out of range.
    """
    kind, _, arg = text.strip().partition(":")
    if kind not in PARTITIONS:
        raise ConfigError(unknown_name("partition", kind, PARTITIONS)
                          + "; write iid, shards:2, dirichlet:0.5 or writer")
    if kind in ("iid", "writer"):
        if arg:
            raise ConfigError(f"partition {kind!r} takes no parameter; got {text!r}")
        return PartitionSpec(kind)
    if kind == "shards":
        try:
            shards = int(arg or "2")
        except ValueError:
            shards = 0
        if not 1 <= shards <= 1000:
            raise ConfigError(f"partition shards:K needs an integer K in [1, 1000] (shards per "
                              f"client); got {text!r}")
        return PartitionSpec(kind, shards=shards)
    try:
        alpha = float(arg or "0.5")
    except ValueError:
        alpha = math.nan
    if not (math.isfinite(alpha) and 0 < alpha <= 1e6):
        raise ConfigError(f"partition dirichlet:ALPHA needs a finite ALPHA in (0, 1e6] "
                          f"(smaller: fewer classes per client); got {text!r}")
    return PartitionSpec(kind, alpha=alpha)


def partition_indices(targets: np.ndarray, clients: int, spec: PartitionSpec, *, seed: int,
                      writers: np.ndarray | None = None) -> list[np.ndarray]:
    """One sorted index array per client into ``targets`` (the training split's labels).

    ``writers`` (the NIST writer of each image) is needed by ``writer``.

    Raises:
        ConfigError: fewer than 1 client, more clients than images (or shards, or writers),
            or ``writer`` without writer labels.
        DataError: a split that leaves a client empty.
    """
    targets = np.asarray(targets)
    n = len(targets)
    if clients < 1:
        raise ConfigError(f"--clients must be an integer >= 1; got {clients}")
    if clients > n:
        raise ConfigError(f"more clients ({clients}) than training images ({n}): every client "
                          "needs data; use at most that many clients or more data")
    rng = np.random.default_rng(seed)
    if spec.kind == "iid":
        parts = np.array_split(rng.permutation(n), clients)
    elif spec.kind == "shards":
        parts = _shards(targets, clients, spec.shards, rng)
    elif spec.kind == "dirichlet":
        parts = _dirichlet(targets, clients, spec.alpha, rng)
    else:
        parts = _by_writer(writers, clients, rng, n)
    parts = [np.sort(p) for p in parts]
    empty = [i for i, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise DataError(f"the {spec} partition leaves {len(empty)} of {clients} clients without "
                        f"data (first: client {empty[0]}); use fewer clients"
                        + (" or a larger alpha" if spec.kind == "dirichlet" else ""))
    return parts


def _shards(targets: np.ndarray, clients: int, per_client: int,
            rng: np.random.Generator) -> list[np.ndarray]:
    count = clients * per_client
    if count > len(targets):
        raise ConfigError(f"shards:{per_client} with {clients} clients needs {count} shards, "
                          f"more than the {len(targets)} training images; use fewer clients "
                          "or fewer shards per client")
    # sorted by label; within a label in a seeded order, so the shards differ by seed
    order = rng.permutation(len(targets))
    by_label = order[np.argsort(targets[order], kind="stable")]
    shards = np.array_split(by_label, count)
    picks = rng.permutation(count).reshape(clients, per_client)
    return [np.concatenate([shards[s] for s in row]) for row in picks]


def _dirichlet(targets: np.ndarray, clients: int, alpha: float,
               rng: np.random.Generator) -> list[np.ndarray]:
    classes = np.unique(targets)
    for _ in range(_DIRICHLET_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for k in classes:
            idx = rng.permutation(np.flatnonzero(targets == k))
            shares = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for c, piece in enumerate(np.split(idx, cuts)):
                parts[c].append(piece)
        result = [np.concatenate(p) for p in parts]
        if all(len(p) for p in result):
            return result
    return result  # partition_indices names the empty clients


def _by_writer(writers: np.ndarray | None, clients: int, rng: np.random.Generator,
               n: int) -> list[np.ndarray]:
    if writers is None:
        raise ConfigError("the writer partition needs the writer of every training image (the "
                          "QMNIST labels, MNIST only); use --dataset mnist, or another partition")
    writers = np.asarray(writers)
    if len(writers) != n:
        raise DataError(f"writer labels for {len(writers)} images, but the training split holds "
                        f"{n}")
    ids = rng.permutation(np.unique(writers))
    if clients > len(ids):
        raise ConfigError(f"more clients ({clients}) than writers ({len(ids)}) in the training "
                          "split: each client holds at least one writer; use at most that many")
    groups = np.array_split(ids, clients)
    return [np.flatnonzero(np.isin(writers, g)) for g in groups]
