"""Flower's deployment engine on loopback: `cnnlab federated server` (a SuperLink) and two
`cnnlab federated client` processes (SuperNodes) complete two rounds on tiny MNIST; the
clients' SuperNodes stop with them."""

from __future__ import annotations

import csv
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

TINY = ["--limit", "300", "--clients", "2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pid or int(fields[1]) == pid:  # session or parent
                found.append(int(entry.name))
    return found


@pytest.mark.slow  # ~2 minutes on the shared 2-core machine: each message starts a ClientApp
def test_superlink_and_two_supernodes_complete_two_rounds(mnist_dir: Path,
                                                          tmp_path: Path) -> None:
    cnnlab = [sys.executable, "-m", "cnnlab.cli.main", "federated"]
    data = ["--data-dir", str(mnist_dir.parent), *TINY]
    port = _free_port()
    server = subprocess.Popen(
        [*cnnlab, "server", *data, "--fraction", "1", "--rounds", "2", "--local-epochs", "1",
         "--batch-size", "30", "--lr", "0.05", "--model", "paper-cnn-tiny", "--port", str(port),
         "--round-timeout", "120", "--wait-clients", "120", "--out", "srv", "--json"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clients = [subprocess.Popen(
        [*cnnlab, "client", *data, "--partition-id", str(i), "--superlink",
         f"127.0.0.1:{port}", "--port", str(_free_port()), "--out", f"c{i}", "--max-wait", "60"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i in range(2)]
    try:
        out, err = server.communicate(timeout=600)
    finally:
        supernodes = [pid for c in clients for pid in _children(c.pid)]
        for c in clients:
            c.send_signal(signal.SIGTERM)
        for c in clients:
            c.wait(timeout=60)
        server.kill()
    assert server.returncode == 0, err[-3000:]
    assert "round 2/2: test accuracy" in err
    m = json.loads(out)
    assert m["rounds_run"] == 2 and m["failures"] == 0 and m["clients_per_round"] == 2
    rows = list(csv.DictReader((tmp_path / "srv" / "rounds.csv").read_text().splitlines()))
    assert [int(r["clients_trained"]) for r in rows] == [0, 2, 2]
    # 150 images per client learn little in 2 rounds; the global model must have changed
    assert float(rows[2]["test_loss"]) != float(rows[0]["test_loss"])
    assert (tmp_path / "srv" / "model.pt").is_file()
    time.sleep(1)
    alive = [pid for pid in supernodes if Path(f"/proc/{pid}").exists()]
    assert not alive, f"SuperNode processes left running: {alive}"


@pytest.mark.slow  # ~5 minutes: three rounds, one of them waits out the round timeout
def test_a_client_that_disconnects_mid_run_is_logged_and_the_rounds_go_on(
        mnist_dir: Path, tmp_path: Path) -> None:
    cnnlab = [sys.executable, "-m", "cnnlab.cli.main", "federated"]
    data = ["--data-dir", str(mnist_dir.parent), "--limit", "300", "--clients", "3"]
    port = _free_port()
    server = subprocess.Popen(
        [*cnnlab, "server", *data, "--fraction", "1", "--rounds", "3", "--local-epochs", "1",
         "--batch-size", "30", "--model", "paper-cnn-tiny", "--port", str(port),
         "--round-timeout", "45", "--wait-clients", "120", "--out", "srv", "--json"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clients = [subprocess.Popen(
        [*cnnlab, "client", *data, "--partition-id", str(i), "--superlink",
         f"127.0.0.1:{port}", "--port", str(_free_port()), "--out", f"c{i}", "--max-wait", "60"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for i in range(3)]
    err_lines: list[str] = []
    try:
        assert server.stderr is not None
        for line in server.stderr:  # client 2 goes away once round 1 is done
            err_lines.append(line)
            if "round 1/3" in line:
                clients[2].send_signal(signal.SIGTERM)
        out = server.stdout.read() if server.stdout else ""
        server.wait(timeout=600)
    finally:
        for c in clients:
            c.send_signal(signal.SIGTERM)
        for c in clients:
            c.wait(timeout=60)
        server.kill()
        for pipe in (server.stdout, server.stderr):
            if pipe is not None:
                pipe.close()
    err = "".join(err_lines)
    assert server.returncode == 0, err[-3000:]
    m = json.loads(out)
    assert m["rounds_run"] == 3 and m["failures"] >= 1
    rows = list(csv.DictReader((tmp_path / "srv" / "rounds.csv").read_text().splitlines()))
    assert [int(r["clients_trained"]) for r in rows][:2] == [0, 3]
    assert all(int(r["clients_trained"]) == 2 for r in rows[2:])
    assert "sent no reply within the round timeout" in err or "a client failed" in err
