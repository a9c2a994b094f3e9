"""``cnnlab federated server`` / ``client``: the same apps on Flower's deployment engine.

The server starts a SuperLink (``flower-superlink --insecure``, on 127.0.0.1 unless told
otherwise), writes a Flower App directory naming :mod:`cnnlab.federated.apps` and submits it
with ``flwr run``; the SuperLink runs the ServerApp, which waits for the clients, runs the
rounds and writes the run directory. Each client starts a SuperNode (``flower-supernode
--insecure``) that connects to the SuperLink and runs the ClientApp for each message on its
part of the data (rebuilt here from the same settings and seed as the server's: with MNIST on
every machine, each client uses only its own part).

Flower 1.42's SuperLink serves the Fleet, Control and ServerApp APIs on one port, over HTTP;
``--insecure`` means without TLS: keep it on loopback or a trusted network (Flower's TLS and
SuperNode authentication options are the way beyond that).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cnnlab.errors import ConfigError
from cnnlab.federated.settings import FederatedSettings, load_run_data
from cnnlab.federated.simulate import WORK_DIR, prepare_clients

__all__ = ["DEFAULT_PORT", "run_client", "run_server"]

log = logging.getLogger("cnnlab")

DEFAULT_PORT = 9092  # the SuperLink's one HTTP port (Flower's own default, 8000, is common)
_APP_TOML = """\
# A Flower App naming cnnlab's apps; written by `cnnlab federated server`.
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "cnnlab-federated"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "cnnlab"

[tool.flwr.app.components]
serverapp = "cnnlab.federated.apps:server_app"
clientapp = "cnnlab.federated.apps:client_app"

[tool.flwr.app.config]
settings-file = {settings}
"""
_FLOWER_CONFIG = """\
[superlink]
default = "cnnlab"

[superlink.cnnlab]
address = {address}
insecure = true
"""


def _env(flwr_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["FLWR_HOME"] = str(flwr_home)
    # Flower starts its helpers (flower-superexec, flwr-serverapp, flwr-clientapp) by name
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _tool(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        raise ConfigError(f"{name} is not installed next to this Python ({path}); install "
                          "the federated extra: pip install 'cnnlab[federated]'")
    return str(path)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be an integer in [1, 65535]; got {port}")


def _stop(process: subprocess.Popen[Any]) -> None:
    """End a process started in its own session, and its children (Flower's helpers)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# the ServerApp's own lines (cnnlab's log) among Flower's, shown without --verbose
_OURS = ("round ", "waiting for clients", "stopped after round", "a client failed",
         "client(s) sent no reply", "no client replied")


def _follow(command: list[str], *, env: dict[str, str], verbose: bool, limit_s: float
            ) -> tuple[int, list[str]]:
    """Run ``flwr run --stream``, echo the run's log (all of it with ``verbose``, else the
    round lines) to stderr; returns the exit status and the last lines.

    Raises:
        RuntimeError: the run did not end within ``limit_s``.
    """
    tail: list[str] = []
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, errors="replace",
                               start_new_session=True)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        _stop(process)

    timer = threading.Timer(limit_s, expire)
    timer.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            tail = [*tail[-11:], line]
            if verbose or any(key in line for key in _OURS):
                print(line, file=sys.stderr, flush=True)
        returncode = process.wait()
    finally:
        timer.cancel()
        _stop(process)
    if expired.is_set():
        raise RuntimeError(f"the federated run did not finish within {limit_s:.0f} s")
    return returncode, tail


def run_server(s: FederatedSettings, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
               overwrite: bool = False, verbose: bool = False) -> dict[str, Any]:
    """Start a SuperLink on ``host:port``, run ``s`` on the clients that connect, stop it;
    returns the run's metrics.

    Raises:
        ConfigError: bad settings, a port in use, ``out`` holding a run.
        RuntimeError: the SuperLink or the run failed (the message quotes its log).
    """
    s.check()
    _check_port(port)
    out = Path(s.out)
    if (out / "model.pt").exists() and not overwrite:
        raise ConfigError(f"{out} already holds a run; pass --overwrite to replace it, or "
                          "choose another --out")
    if _port_open(host, port):
        raise ConfigError(f"{host}:{port} is already in use; pass another --port")
    load_run_data(s)  # the server's splits load here, before any process starts
    work = (out / WORK_DIR).resolve()
    (work / "app").mkdir(parents=True, exist_ok=True)
    (work / "flwr-home").mkdir(parents=True, exist_ok=True)
    settings_file = s.save(work / "settings.json").resolve()
    (work / "app" / "pyproject.toml").write_text(
        _APP_TOML.format(settings=json.dumps(str(settings_file))))
    (work / "flwr-home" / "config.toml").write_text(
        _FLOWER_CONFIG.format(address=json.dumps(f"{host}:{port}")))
    (out / "model.pt").unlink(missing_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)
    env = _env(work / "flwr-home")
    superlink_log = work / "superlink.log"
    with superlink_log.open("wb") as log_file:
        superlink = subprocess.Popen(
            [_tool("flower-superlink"), "--insecure", "--host", host, "--port", str(port)],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _port_open(host, port):
            if superlink.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the SuperLink did not start; its log "
                                   f"({superlink_log}):\n{_tail(superlink_log)}")
            time.sleep(0.3)
        log.info("SuperLink listening on %s:%d; start the %d clients with: cnnlab federated "
                 "client --superlink %s:%d --partition-id I (I = 0 to %d), with the same data "
                 "and partition settings", host, port, s.clients, host, port, s.clients - 1)
        limit = s.wait_clients + s.rounds * (s.round_timeout + 120) + 300
        returncode, tail = _follow([_tool("flwr"), "run", str(work / "app"), "cnnlab",
                                    "--stream"], env=env, verbose=verbose, limit_s=limit)
    finally:
        _stop(superlink)
    if not (out / "metrics.json").is_file():
        raise RuntimeError(f"the federated run ended without a result (flwr run exit status "
                           f"{returncode}); its last lines:\n" + "\n".join(tail))
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    return metrics


def run_client(s: FederatedSettings, partition_id: int, *, superlink: str,
               port: int, work: Path, max_wait_s: float = 300.0) -> int:
    """Build this client's data (partition ``partition_id`` of ``s``) and run a SuperNode
    connected to ``superlink`` until it is stopped (Ctrl-C) or cannot reach the SuperLink
    for ``max_wait_s``; returns its exit status.

    Raises:
        ConfigError: bad settings or partition id.
        DataError: missing data, a client left without data.
    """
    s.check()
    _check_port(port)
    if not 0 <= partition_id < s.clients:
        raise ConfigError(f"--partition-id must be in [0, {s.clients - 1}] for --clients "
                          f"{s.clients}; got {partition_id}")
    host, _, superlink_port = superlink.rpartition(":")
    if not host or not superlink_port.isdigit():
        raise ConfigError(f"--superlink must be HOST:PORT; got {superlink!r}")
    work = work.resolve()
    data_file = work / "clients.pt"
    sizes = prepare_clients(s, data_file)
    log.info("client %d of %d: %d training images; connecting to the SuperLink at %s",
             partition_id, s.clients, sizes[partition_id], superlink)
    (work / "flwr-home").mkdir(parents=True, exist_ok=True)
    node_config = (f"partition-id={partition_id} num-partitions={s.clients} "
                   f"data-file={json.dumps(str(data_file))}")
    def _terminate(*_: Any) -> None:  # SIGTERM: stop the SuperNode too (the finally below)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    supernode = subprocess.Popen(
        [_tool("flower-supernode"), "--insecure", "--superlink", superlink,
         "--port", str(port), "--node-config", node_config,
         "--max-wait-time", str(max_wait_s)],
        env=_env(work / "flwr-home"), start_new_session=True)
    try:
        return supernode.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        _stop(supernode)
