"""``cnnlab federated simulate``: a federated run on Flower's simulation engine (Ray).

The data is loaded and partitioned once here; the client data file (the training split and
one index array per client) goes into ``<out>/.federated/``, where every Ray actor reads it
once. The ServerApp runs in this process and writes the run directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from cnnlab.errors import ConfigError
from cnnlab.federated.settings import FederatedSettings, client_partition, load_run_data
from cnnlab.federated.task import save_client_data

__all__ = ["prepare_clients", "simulate"]

log = logging.getLogger("cnnlab")

WORK_DIR = ".federated"


def prepare_clients(s: FederatedSettings, path: Path, *, progress: bool = False) -> list[int]:
    """Load and partition the data; write the client data file; return the clients' sizes.

    Raises:
        ConfigError, DataError: bad settings, missing data, a client left without data.
    """
    _, data = load_run_data(s, progress=progress)
    parts = client_partition(s, data)
    save_client_data(path, data.train.images, data.train.targets, parts, data.mean, data.std)
    sizes = [len(p) for p in parts]
    log.info("%d clients, partition %s: %d to %d images each (%d in all); server validation "
             "%d, test %d", s.clients, s.partition, min(sizes), max(sizes), sum(sizes),
             len(data.val) if data.val is not None else 0,
             len(data.test) if data.test is not None else 0)
    return sizes


def simulate(s: FederatedSettings, *, workers: int | None = None, overwrite: bool = False,
             progress: bool = True, verbose: bool = False) -> dict[str, Any]:
    """Run ``s`` on Flower's simulation engine with ``workers`` clients training at a time
    (default: the cores); returns the run's metrics. ``verbose`` keeps Flower's own log.

    Raises:
        ConfigError: bad settings, or ``out`` holds a run and ``overwrite`` is not set.
        DataError: missing data, a client left without data.
        RuntimeError: the simulation failed (Flower's log above says why).
    """
    s.check()
    out = Path(s.out)
    if (out / "model.pt").exists() and not overwrite:
        raise ConfigError(f"{out} already holds a run; pass --overwrite to replace it, or "
                          "choose another --out")
    work = out / WORK_DIR
    s.client_data = str((work / "clients.pt").resolve())
    prepare_clients(s, Path(s.client_data), progress=progress)
    settings_file = s.save(work / "settings.json")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    workers = max(1, min(workers or cores, s.clients))

    from flwr.simulation import run_simulation

    from cnnlab.federated.apps import make_client_app, make_server_app

    (out / "model.pt").unlink(missing_ok=True)
    if not verbose:  # Flower logs every message; cnnlab logs one line per round
        logging.getLogger("flwr").setLevel(logging.WARNING)
    try:
        run_simulation(
            server_app=make_server_app(str(settings_file.resolve())),
            client_app=make_client_app(s.client_data),
            num_supernodes=s.clients,
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                            "init_args": {"num_cpus": workers, "num_gpus": 0,
                                          "include_dashboard": False,
                                          "log_to_driver": False}},
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not (out / "metrics.json").is_file() or not (out / "model.pt").is_file():
        raise RuntimeError("the federated simulation ended without a result; Flower's log "
                           "above says why (rerun with --debug for more)")
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    return metrics
