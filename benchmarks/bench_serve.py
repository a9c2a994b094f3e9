"""Single-image predictions over HTTP against an empty endpoint as the ceiling; prints JSON.

Starts ``cnnlab serve`` (the default model unless --checkpoint) and, as the ceiling, a FastAPI
app with one endpoint that returns a constant, both on uvicorn on loopback, each in its own
process; the load comes from this process with keep-alive connections, bounded in count
(--requests per level) and time (--seconds per level). At concurrency 1, 8 and 32 it reports
requests/s, p50/p99 latency, the CPU time per request of each server and of this load
generator (from /proc, on Linux), cnnlab's mean inference batch size, and the ratio. It also
measures the in-process ``predict`` latency at batch 1 for the checkpoint.

    python benchmarks/bench_serve.py            # about 1 minute on 2 cores; run it alone
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import machine

CEILING_APP = """
from fastapi import FastAPI, Request
app = FastAPI()
@app.post("/v1/predict")
async def predict(request: Request):
    await request.body()
    return {"label": "0"}
@app.get("/v1/health")
async def health():
    return {"status": "ok"}
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/v1/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    sys.exit("server did not start")


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) a process has used; None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _batches(port: int) -> tuple[float, float]:
    """(batches run, images in them) from the service's /metrics."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines()
                  if line.startswith(("cnnlab_batches_total", "cnnlab_batched_images_total")))
    return float(values["cnnlab_batches_total"]), float(values["cnnlab_batched_images_total"])


def _measure(port: int, pid: int, body: bytes, concurrency: int, requests: int,
             seconds: float, batches: bool) -> dict:
    """_load, plus the server's and this process's CPU time per request and, for cnnlab,
    the mean inference batch size."""
    server0, client0 = _cpu_s(pid), time.process_time()
    b0 = _batches(port) if batches else None
    r = _load(port, body, concurrency, requests, seconds)
    server1, client1 = _cpu_s(pid), time.process_time()
    if server0 is not None and server1 is not None:
        r["server_cpu_us_per_request"] = round(1e6 * (server1 - server0) / r["requests"])
    r["client_cpu_us_per_request"] = round(1e6 * (client1 - client0) / r["requests"])
    if b0 is not None:
        b1 = _batches(port)
        r["mean_batch_size"] = round((b1[1] - b0[1]) / max(b1[0] - b0[0], 1), 1)
    return r


def _load(port: int, body: bytes, concurrency: int, requests: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    remaining = [requests]
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                if remaining[0] <= 0 or time.perf_counter() > deadline:
                    break
                remaining[0] -= 1
            t0 = time.perf_counter()
            conn.request("POST", "/v1/predict", body=body,
                         headers={"content-type": "image/png"})
            r = conn.getresponse()
            r.read()
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                latencies.append(ms)
                errors += r.status != 200
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {"requests": len(lat), "errors": errors, "requests_per_s": round(len(lat) / wall, 1),
            "p50_ms": round(statistics.median(lat), 2),
            "p99_ms": round(lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="default")
    p.add_argument("--engine", default="auto")
    p.add_argument("--requests", type=int, default=4000, help="per concurrency level")
    p.add_argument("--seconds", type=float, default=10.0, help="per concurrency level")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--photo", action="store_true",
                   help="send examples/digits/digit7_paper.png (a photo) instead")
    args = p.parse_args()

    # the request: an MNIST test digit as a 28x28 PNG (a photo would add its preprocessing,
    # about 10 ms, to every request: --photo measures that case)
    repo = Path(__file__).resolve().parents[1]
    if args.photo:
        body = (repo / "examples" / "digits" / "digit7_paper.png").read_bytes()
    else:
        import io

        from PIL import Image

        from cnnlab.data import load_dataset

        digit = load_dataset("mnist", "test", data_dir=args.data_dir, progress=False).images[0, 0]
        buf = io.BytesIO()
        Image.fromarray(digit.numpy()).save(buf, format="PNG")
        body = buf.getvalue()
    servers: dict[str, tuple[int, int]] = {}  # name: (port, pid)
    procs = []
    try:
        port = _port()
        procs.append(subprocess.Popen(
            [sys.executable, "-c", "from cnnlab.cli.main import entry; entry()", "serve",
             args.checkpoint, "--port", str(port), "--engine", args.engine,
             "--feedback-db", "sqlite:///runs/bench-serve/feedback.db", "-q"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(port, procs[-1])
        servers["cnnlab"] = (port, procs[-1].pid)
        port = _port()
        procs.append(subprocess.Popen(
            [sys.executable, "-c", CEILING_APP + "\nimport uvicorn\nuvicorn.run(app, host="
             f"'127.0.0.1', port={port}, log_level='warning')"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(port, procs[-1])
        servers["empty endpoint"] = (port, procs[-1].pid)
        results: dict[str, dict] = {}
        for c in (1, 8, 32):
            for port, _ in servers.values():  # warm-up, then the measurement
                _load(port, body, c, 50, 5)
            level = {name: _measure(port, pid, body, c, args.requests, args.seconds,
                                    batches=name == "cnnlab")
                     for name, (port, pid) in servers.items()}
            level["ratio_to_ceiling"] = round(level["cnnlab"]["requests_per_s"]
                                              / level["empty endpoint"]["requests_per_s"], 2)
            results[f"concurrency {c}"] = level
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()

    from cnnlab.api import load
    from cnnlab.cli.main import _tune_malloc

    _tune_malloc()
    model = load(args.checkpoint, engine=args.engine)
    x = model.to_input(body).unsqueeze(0)
    for _ in range(20):
        model.predict_proba(x)
    ts = []
    for _ in range(500):
        t0 = time.perf_counter()
        model.predict_proba(x)
        ts.append((time.perf_counter() - t0) * 1000)
    print(json.dumps({"machine": machine(), "checkpoint": args.checkpoint,
                      "request": "photo 160x120" if args.photo else "MNIST digit, 28x28 PNG",
                      "engine": model.engine, "http": results,
                      "in_process_predict_batch1_ms_p50": round(statistics.median(ts), 4)},
                     indent=2))


if __name__ == "__main__":
    main()
