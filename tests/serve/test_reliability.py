"""The service under load and abuse: acknowledged feedback survives kill -9; hostile uploads
get 4xx and the service keeps answering."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from cnnlab.feedback.store import FeedbackStore
from synth import make_png


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(url: str, body: bytes | None = None, ctype: str = "application/json"
          ) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"content-type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def service(run_dir: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    port = _free_port()
    db = tmp_path / "feedback.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cnnlab.cli.main import entry; entry()", "serve",
         str(run_dir), "--port", str(port), "--engine", "torch", "--feedback-db",
         f"sqlite:///{db}", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if _call(f"{base}/v1/health")[0] == 200:
                break
        except (urllib.error.URLError, ConnectionError):
            pass
        assert proc.poll() is None and time.time() < deadline, "the service did not start"
        time.sleep(0.1)
    yield base, proc, db
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_acknowledged_feedback_survives_kill_9(service) -> None:  # type: ignore[no-untyped-def]
    base, proc, db = service
    pixels = np.zeros((28, 28))
    pixels[6:22, 12:16] = 255
    body = json.dumps({"pixels": pixels.tolist()}).encode()
    with ThreadPoolExecutor(32) as pool:
        preds = list(pool.map(lambda _: _call(f"{base}/v1/predict", body), range(1000)))
    assert all(status == 200 for status, _ in preds)
    ids = [p["prediction_id"] for _, p in preds]

    def send(i: int) -> tuple[str, int]:
        label = "a" if i % 2 else "b"
        fb = json.dumps({"prediction_id": ids[i], "label": label}).encode()
        return ids[i], _call(f"{base}/v1/feedback", fb)[0]

    with ThreadPoolExecutor(32) as pool:
        acks = list(pool.map(send, range(1000)))
    acked = {pid for pid, status in acks if status == 201}
    assert len(acked) == 1000
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stored = {row.prediction_id for row in FeedbackStore(f"sqlite:///{db}").rows()}
    assert acked <= stored


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (the data is a few bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\x00" * 10)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)) + struct.pack(">I", len(idat) - 4) + idat
            + struct.pack(">I", zlib.crc32(idat)))


def test_hostile_uploads_never_take_the_service_down(service) -> None:  # type: ignore[no-untyped-def]
    base, proc, _ = service
    cases = [
        (make_png()[:50], "image/png", 400),
        (b"", "image/png", 400),
        (b"just some text", "image/png", 400),
        (_png_claiming(20000, 20000), "image/png", 413),
        (make_png(), "application/x-www-form-urlencoded", 415),
        (b"x" * (11 * 1024 * 1024), "image/png", 413),
    ]
    for body, ctype, status in cases:
        got, answer = _call(f"{base}/v1/predict", body, ctype)
        assert got == status, (ctype, len(body), answer)
        assert set(answer) == {"error"}
    assert proc.poll() is None
    assert _call(f"{base}/v1/predict", make_png(), "image/png")[0] == 200
