"""A small trained 28x28 model, PNG bytes and a loopback server for the service tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cnnlab.config import resolve_config
from cnnlab.training.loop import fit
from synth import make_png, write_image_folder


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    write_image_folder(root / "data" / "train", n_per_class=16, num_classes=3, size=28,
                       classes=["a", "b", "c"])
    write_image_folder(root / "data" / "test", n_per_class=4, num_classes=3, size=28, seed=3,
                       classes=["a", "b", "c"])
    cfg = resolve_config({"model": {"name": "convnet", "width": 4},
                          "data": {"dataset": str(root / "data"), "val_fraction": 0.2},
                          "train": {"epochs": 2, "batch_size": 16, "threads": 1}})
    fit(cfg, out_dir=root / "run", progress=False)
    return root / "run"



@pytest.fixture
def png() -> bytes:
    """A 28x28 PNG with a bright square."""
    return make_png()


@contextmanager
def _serving(app: Any) -> Iterator[str]:
    """Run ``app`` on a real uvicorn server on a free loopback port; yields its base URL."""
    import uvicorn

    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started:
        assert time.time() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def serving() -> Any:
    """``with serving(app) as url:`` runs ``app`` on uvicorn on a free loopback port."""
    return _serving
