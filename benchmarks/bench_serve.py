"""Single-image predictions over HTTP against an empty endpoint as the ceiling; prints JSON.

Starts ``cnnlab serve`` (the default model unless --checkpoint) and, as the ceiling, a FastAPI
app with one endpoint that returns a constant, both on uvicorn on loopback, each in its own
process; the load comes from this process with keep-alive connections, bounded in count
(--requests per level) and time (--seconds per level). At concurrency 1, 8 and 32 it reports
requests/s, p50/p99 latency, the CPU time per request of each server and of this load
generator (from /proc, on Linux), cnnlab's mean inference batch size, and the ratio. It also
measures the in-process ``predict`` latency at batch 1 for the checkpoint.

    python benchmarks/bench_serve.py            # about 1 minute on 2 cores; run it alone

With ``--hostile`` it measures the service under a hostile mix instead (issue 14): the p99
latency of normal requests with 1 % of requests hostile (bodies over the limit, chunked or
declared; PNG headers claiming huge sizes; real 6300x6300 16-bit PNGs, within the limits)
against the same load without them, as medians over ``--repeats`` alternating runs; and,
first, on the warmed-up service, its RSS before and after 1,000 oversized requests (bodies
over the limit, huge headers) and after 50 large decodes.

    python benchmarks/bench_serve.py --hostile  # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import select
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
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


# --- the hostile mix (--hostile) --------------------------------------------------------------

def _png(width: int, height: int, depth: int, colour: int, rows: list[bytes]) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload)))

    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for row in rows) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth,
                                                               colour, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def _png_rgba16(side: int) -> bytes:
    """A 16-bit RGBA PNG, side x side, white with a black block: ~0.4 MB for 6300 (the
    issue's 320 kB PNG that took 3-6 s and 1.2 GB to decode)."""
    white, black, third = b"\xff" * 8, b"\x00" * 6 + b"\xff\xff", side // 3
    plain = b"\x00" + white * side
    inked = b"\x00" + white * third + black * (side - 2 * third) + white * third
    return _png(side, side, 16, 6, [inked if third <= y < 2 * third else plain
                                    for y in range(side)])


def _png_claiming(side: int) -> bytes:
    """A PNG of a few bytes whose header claims side x side pixels."""
    return _png(side, side, 8, 0, [b"\x00" * 64])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _answer(sock: socket.socket) -> int:
    """The status of the response on ``sock`` (its body read and dropped)."""
    sock.settimeout(60)
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            return 0  # closed without an answer
        data += part
    return int(data.split(b" ", 2)[1])


def _hostile(port: int, kind: str, big: bytes) -> int:
    """One hostile request on its own connection; returns the status (0: no answer)."""
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        head = "POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: image/png\r\n"
        if kind == "chunked-over-limit":  # 11 MB offered without a length, until answered
            sock.sendall((head + "transfer-encoding: chunked\r\n\r\n").encode())
            piece = b"%x\r\n%s\r\n" % (1 << 16, b"\0" * (1 << 16))
            for _ in range(176):
                if select.select([sock], [], [], 0)[0]:
                    break
                try:
                    sock.sendall(piece)
                except OSError:
                    break
            return _answer(sock)
        if kind == "declared-over-limit":  # 100 MB announced, never sent
            sock.sendall((head + "content-length: 104857600\r\n\r\n").encode())
            return _answer(sock)
        body = _png_claiming(30000) if kind == "huge-header" else big
        sock.sendall((head + f"content-length: {len(body)}\r\n\r\n").encode() + body)
        return _answer(sock)
    except OSError:
        return 0
    finally:
        sock.close()


def _until_no_decodes(port: int, timeout: float = 300) -> float:
    """Wait until the service's decode workers are idle; returns the seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        if "cnnlab_decodes_in_flight 0" in text.splitlines():
            break
        time.sleep(0.5)
    return round(time.perf_counter() - t0, 1)


HOSTILE_KINDS = ("chunked-over-limit", "declared-over-limit", "huge-header", "large-image")


def _load_mix(port: int, body: bytes, concurrency: int, seconds: float, hostile_every: int,
              big: bytes) -> dict:
    """Normal requests on keep-alive connections for ``seconds``; with ``hostile_every``,
    every n-th request is a hostile one instead (of the kinds in turn)."""
    normal: list[float] = []
    hostile: dict[str, list[int]] = {k: [] for k in HOSTILE_KINDS}
    lock = threading.Lock()
    count = [0]
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.perf_counter() < deadline:
            with lock:
                count[0] += 1
                n = count[0]
            if hostile_every and n % hostile_every == 0:
                kind = HOSTILE_KINDS[(n // hostile_every) % len(HOSTILE_KINDS)]
                status = _hostile(port, kind, big)
                with lock:
                    hostile[kind].append(status)
                conn.close()  # it may have idled past the server's keep-alive meanwhile
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            t0 = time.perf_counter()
            conn.request("POST", "/v1/predict", body=body, headers={"content-type": "image/png"})
            r = conn.getresponse()
            r.read()
            ms = (time.perf_counter() - t0) * 1000
            assert r.status == 200, r.status
            with lock:
                normal.append(ms)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = sorted(normal)
    return {"normal_requests": len(lat), "p50_ms": round(statistics.median(lat), 2),
            "p99_ms": round(lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))], 2),
            "hostile": {k: {"n": len(v), "statuses": sorted(set(v))}
                        for k, v in hostile.items() if v}}


def hostile_main(args: argparse.Namespace, body: bytes) -> None:
    big = _png_rgba16(6300)
    port = _port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cnnlab.cli.main import entry; entry()", "serve",
         args.checkpoint, "--port", str(port), "--engine", args.engine,
         "--feedback-db", "sqlite:///runs/bench-serve/feedback.db", "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(port, proc)
        _load_mix(port, body, args.concurrency, 3, 0, big)  # warm-up
        # memory first, on a warmed-up service that has decoded no large image yet
        time.sleep(2)
        rss = {"start": _rss_mb(proc.pid)}
        kinds = ("chunked-over-limit", "declared-over-limit", "huge-header")
        statuses: dict[str, set[int]] = {k: set() for k in kinds}
        with ThreadPoolExecutor(4) as pool:
            for i, status in enumerate(pool.map(
                    lambda i: _hostile(port, kinds[i % 3], big), range(1000))):
                statuses[kinds[i % 3]].add(status)
        rss["after_1000_oversized"] = _rss_mb(proc.pid)
        with ThreadPoolExecutor(2) as pool:  # as many as there are decode workers
            large = sorted(set(pool.map(lambda _: _hostile(port, "large-image", big),
                                        range(50))))
        rss["after_50_large_images"] = _rss_mb(proc.pid)
        waited = _until_no_decodes(port)  # abandoned (503) decodes finish on their own
        time.sleep(2)
        rss["idle_after_large_images"] = _rss_mb(proc.pid)
        alone = []
        for _ in range(3):  # a large image on an otherwise idle service
            t0 = time.perf_counter()
            alone.append((_hostile(port, "large-image", big), time.perf_counter() - t0))
        runs: dict[str, list[dict]] = {"without": [], "with": []}
        for _ in range(args.repeats):  # alternating, so drifting load hits both alike
            runs["without"].append(_load_mix(port, body, args.concurrency, args.seconds, 0,
                                             big))
            runs["with"].append(_load_mix(port, body, args.concurrency, args.seconds, 100,
                                          big))
        p99 = {k: statistics.median(r["p99_ms"] for r in v) for k, v in runs.items()}
        p50 = {k: statistics.median(r["p50_ms"] for r in v) for k, v in runs.items()}
        _load_mix(port, body, 1, 1, 0, big)  # still serving
    finally:
        proc.terminate()
        proc.wait()
    print(json.dumps({
        "machine": machine(), "load_average": os.getloadavg(),
        "checkpoint": args.checkpoint, "concurrency": args.concurrency,
        "seconds_per_run": args.seconds, "repeats": args.repeats,
        "normal_p99_ms_median": p99, "normal_p50_ms_median": p50,
        "p99_ratio_with_to_without": round(p99["with"] / p99["without"], 2),
        "target_p99_ratio": "<= 2",
        "runs": runs,
        "rss_mb": rss,
        "rss_after_1000_oversized_minus_start_mb": round(
            rss["after_1000_oversized"] - rss["start"], 1),
        "rss_idle_after_large_images_minus_start_mb": round(
            rss["idle_after_large_images"] - rss["start"], 1),
        "waited_for_abandoned_decodes_s": waited,
        "target_rss_back_within_mb": 50,
        "oversized_statuses": {k: sorted(v) for k, v in statuses.items()},
        "large_image_statuses": large,
        "large_image_alone": {"statuses": sorted({st for st, _ in alone}),
                              "median_s": round(statistics.median(t for _, t in alone), 2)}},
        indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="default")
    p.add_argument("--engine", default="auto")
    p.add_argument("--requests", type=int, default=4000, help="per concurrency level")
    p.add_argument("--seconds", type=float, default=10.0, help="per concurrency level")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--photo", action="store_true",
                   help="send examples/digits/digit7_paper.png (a photo) instead")
    p.add_argument("--hostile", action="store_true",
                   help="measure the hostile mix and the memory after oversized requests")
    p.add_argument("--concurrency", type=int, default=8, help="with --hostile")
    p.add_argument("--repeats", type=int, default=3, help="with --hostile")
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
    if args.hostile:
        hostile_main(args, body)
        return
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
