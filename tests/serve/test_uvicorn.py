"""A real uvicorn server on loopback, spoken to over HTTP by a plain client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cnnlab.serve.app import ServeSettings, create_app


@pytest.fixture(scope="module")
def server(run_dir: Path, tmp_path_factory: pytest.TempPathFactory, serving):  # type: ignore[no-untyped-def]
    db = tmp_path_factory.mktemp("uvicorn-store") / "feedback.db"
    app = create_app(ServeSettings(checkpoint=str(run_dir), engine="onnx",
                                   max_batch_delay_ms=5, feedback_url=f"sqlite:///{db}"))
    with serving(app) as url:
        yield url


def _post(url: str, body: bytes, ctype: str) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"content-type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_concurrent_requests_are_batched(server: str, png: bytes) -> None:
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: _post(f"{server}/v1/predict", png, "image/png"),
                                range(64)))
    assert all(status == 200 for status, _ in results)
    labels = {body["label"] for _, body in results}
    assert len(labels) == 1  # the same image, the same answer, whatever batch it ran in
    with urllib.request.urlopen(f"{server}/metrics", timeout=10) as r:
        text = r.read().decode()
    batches = int(next(ln.split()[-1] for ln in text.splitlines()
                       if ln.startswith("cnnlab_batches_total")))
    images = int(next(ln.split()[-1] for ln in text.splitlines()
                      if ln.startswith("cnnlab_batched_images_total")))
    assert images == 64 and batches < 64  # some requests shared a batch
    status, body = _post(f"{server}/v1/predict", b"\x89PNG\r\n\x1a\n truncated", "image/png")
    assert status == 400 and body["error"]["type"] == "bad_image"
    with urllib.request.urlopen(f"{server}/v1/model", timeout=10) as r:
        assert json.loads(r.read())["engine"] == "onnx"


def test_chunked_bodies_are_held_to_the_limit(server: str, png: bytes) -> None:
    import http.client
    from urllib.parse import urlsplit

    host = urlsplit(server)

    def chunked(parts: list[bytes]) -> tuple[int, dict]:
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
        conn.request("POST", "/v1/predict", body=iter(parts), encode_chunked=True,
                     headers={"content-type": "image/png", "transfer-encoding": "chunked"})
        r = conn.getresponse()
        out = r.status, json.loads(r.read())
        conn.close()
        return out

    status, body = chunked([png[:40], png[40:]])  # no content-length: read in pieces
    assert status == 200 and body["label"]
    status, body = chunked([b"\0" * (1 << 20)] * 11)  # 11 MB over the default 10 MB
    assert status == 413 and body["error"]["type"] == "payload_too_large"
    with urllib.request.urlopen(f"{server}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'cnnlab_requests_total{path="/v1/predict",status="413"} 1' in text
