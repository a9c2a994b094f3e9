"""A small trained 28x28 model, PNG bytes and a loopback server for the service tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from synth import make_png, train_small_abc_model


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_abc_model(tmp_path_factory.mktemp("serve"))



@pytest.fixture
def png() -> bytes:
    """A 28x28 PNG with a bright square."""
    return make_png()


@contextmanager
def _serving(app: Any) -> Iterator[str]:
    """Run ``app`` on a real uvicorn server on a free loopback port, configured as `cnnlab
    serve` runs it; yields its base URL."""
    import uvicorn

    from cnnlab.serve.framing import bind, server_config

    sock = bind("127.0.0.1", 0)
    srv = uvicorn.Server(server_config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started:
        assert time.time() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def serving() -> Any:
    """``with serving(app) as url:`` runs ``app`` on uvicorn on a free loopback port."""
    return _serving
