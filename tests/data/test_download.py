"""Downloading from mirrors, served by a real HTTP server on 127.0.0.1 (never the internet).

Plain http is refused for every host but loopback, and there only with
``allow_http_loopback=True``, which every test here passes for its local server.
"""

import contextlib
import functools
import http.server
import re
import shutil
import socket
import struct
import threading
from typing import ClassVar

import pytest

from cnnlab.data import load_dataset
from cnnlab.errors import ConfigError, DatasetNotFoundError

TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep pytest output clean
        pass


@pytest.fixture(autouse=True)
def _downloads_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CNNLAB_OFFLINE", raising=False)


def test_offline_environment_forbids_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")
    with pytest.raises(DatasetNotFoundError, match=r"downloading is off \(\$CNNLAB_OFFLINE=1"):
        load_dataset("mnist", "test", data_dir=tmp_path, mirrors=["http://127.0.0.1:9/"],
                     allow_http_loopback=True)


@contextlib.contextmanager
def _loopback_servers():
    """Yields ``start(handler_class) -> base URL`` for loopback HTTP servers, all shut down on
    exit. A short poll interval makes shutdown() quick."""
    servers = []

    def start(handler) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/"

    try:
        yield start
    finally:
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join()


@pytest.fixture
def serve():
    """Start a loopback HTTP server for a directory; yields its base URL."""
    with _loopback_servers() as start:
        yield lambda directory: start(
            functools.partial(_QuietHandler, directory=str(directory)))


def _dead_url() -> str:
    """A loopback URL where nothing listens: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_download_verifies_and_falls_back_to_next_mirror(mnist_dir, tmp_path, serve):
    served = tmp_path / "mirror"
    served.mkdir()
    for name in TEST_FILES:
        shutil.copy(mnist_dir / name, served / name)
    mirrors = [_dead_url(), serve(tmp_path / "empty-mirror"), serve(served)]
    data_dir = tmp_path / "data"
    ds = load_dataset("mnist", "test", data_dir=data_dir, progress=False, mirrors=mirrors,
                      timeout=5, allow_http_loopback=True)
    assert len(ds) == 10000
    # Into <data_dir>/mnist/, complete, with no temporary files left behind.
    assert sorted(p.name for p in (data_dir / "mnist").iterdir()) == sorted(TEST_FILES)
    for name in TEST_FILES:
        assert (data_dir / "mnist" / name).read_bytes() == (mnist_dir / name).read_bytes()
    # Now found on disk without the network.
    assert len(load_dataset("mnist", "test", data_dir=data_dir, download=False)) == 10000


def test_download_progress_goes_to_stderr(mnist_dir, tmp_path, serve, capsys):
    served = tmp_path / "mirror"
    served.mkdir()
    for name in TEST_FILES:
        shutil.copy(mnist_dir / name, served / name)
    load_dataset("mnist", "test", data_dir=tmp_path / "d", mirrors=[serve(served)], timeout=5,
                 allow_http_loopback=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "download t10k-images-idx3-ubyte.gz" in captured.err and "MiB" in captured.err


def test_download_with_wrong_checksum_leaves_nothing(fake_idx, tmp_path, serve):
    served = tmp_path / "mirror"
    fake_idx(served)  # valid IDX files, but not MNIST
    url = serve(served)
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", "test", data_dir=data_dir, progress=False, mirrors=[url], timeout=5,
                     allow_http_loopback=True)
    message = str(info.value)
    assert re.search(
        rf"download failed: {re.escape(url)}t10k-images-idx3-ubyte.gz: the downloaded file: "
        "checksum mismatch: expected sha256 0fa7898d", message
    )
    assert list((data_dir / "mnist").iterdir()) == []  # no partial or unverified file


def test_download_failure_lists_everything(tmp_path):
    dead = _dead_url()
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("kmnist", "train", data_dir=data_dir, progress=False, mirrors=[dead],
                     timeout=2, allow_http_loopback=True)
    message = str(info.value)
    assert message.startswith(
        "kmnist train split not found: missing train-images-idx3-ubyte.gz, "
        f"train-labels-idx1-ubyte.gz; looked in {data_dir}, {data_dir / 'kmnist'}, "
    )
    assert f"download failed: {dead}train-images-idx3-ubyte.gz: " in message
    assert "train-labels-idx1-ubyte.gz: " not in message  # no point trying once one failed
    assert "Connection refused" in message
    assert "--data-dir DIR (or $CNNLAB_DATA_DIR)" in message
    assert list((data_dir / "kmnist").iterdir()) == []


def test_default_mirrors_are_the_published_ones():
    from cnnlab.data import dataset_info

    assert dataset_info("mnist").mirrors == (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    )
    # Fashion-MNIST's own host serves plain http only: Keras's https copy of the same files.
    assert dataset_info("fashion-mnist").mirrors == (
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    )
    assert dataset_info("kmnist").mirrors == ("https://codh.rois.ac.jp/kmnist/dataset/kmnist/",)


# ------------------------------------------------------------------- https only, and caps


HTTPS_ONLY = ("downloads use https only, so nobody on the way can read or replace the file; use "
              "an https mirror")
LOOPBACK_ONLY_IF_ALLOWED = ("plain http is accepted only from a loopback test server, with "
                            "allow_http_loopback=True")


@pytest.mark.parametrize(
    ("mirror", "allow", "problem"),
    [
        ("http://example.com/mnist/", False, HTTPS_ONLY),
        ("http://example.com/mnist/", True, HTTPS_ONLY),
        ("http://10.0.0.1/mnist/", True, HTTPS_ONLY),  # private is not loopback
        ("http://127.0.0.1.example.com/", True, HTTPS_ONLY),
        ("file:///etc/", True, HTTPS_ONLY),
        ("ftp://example.com/", False, HTTPS_ONLY),
        ("http://127.0.0.1:8000/", False, LOOPBACK_ONLY_IF_ALLOWED),
        ("http://localhost:8000/", False, LOOPBACK_ONLY_IF_ALLOWED),
    ],
)
def test_non_https_mirror_is_refused(tmp_path, mirror, allow, problem):
    with pytest.raises(ConfigError, match=re.escape(
        f"The 'mirrors' parameter of load_dataset must hold https URLs ({problem}). "
        f"Got {mirror!r} instead."
    )):
        load_dataset("mnist", "test", data_dir=tmp_path, mirrors=[mirror],
                     allow_http_loopback=allow)
    assert list(tmp_path.iterdir()) == []  # refused before anything was looked up or made


@pytest.mark.parametrize("mirror", ["http://127.0.0.1:9/", "http://[::1]:9/",
                                    "http://localhost:9/", "https://example.com/"])
def test_https_and_loopback_test_servers_are_accepted(tmp_path, mirror):
    # Accepted as arguments (downloading is off, so nothing is contacted).
    with pytest.raises(DatasetNotFoundError, match="downloading is off"):
        load_dataset("mnist", "test", data_dir=tmp_path, download=False, mirrors=[mirror],
                     allow_http_loopback=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers every GET from ``routes``: path -> (status, headers, body)."""

    routes: ClassVar[dict[str, tuple[int, dict[str, str], bytes]]] = {}

    def do_GET(self):
        status, headers, body = self.routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


@pytest.fixture
def serve_routes():
    """Start a loopback server answering from a routes table (HTTP/1.0: a body without
    Content-Length ends when the connection closes); yields its base URL."""
    with _loopback_servers() as start:
        yield lambda routes: start(type("Routes", (_Handler,), {"routes": routes}))


def test_redirect_to_plain_http_is_refused(tmp_path, serve_routes):
    target = "http://example.com/t10k-images-idx3-ubyte.gz"
    url = serve_routes({"/t10k-images-idx3-ubyte.gz": (302, {"Location": target}, b"")})
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError, match=re.escape(
        f"download failed: {url}t10k-images-idx3-ubyte.gz: redirected to {target}, refused: "
        f"not an https URL: {HTTPS_ONLY}"
    )):
        load_dataset("mnist", "test", data_dir=data_dir, progress=False, mirrors=[url],
                     timeout=5, allow_http_loopback=True)
    assert list((data_dir / "mnist").iterdir()) == []


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "no-length"])
def test_oversized_download_is_stopped(fake_idx, tmp_path, serve_routes, announced):
    # MNIST's test labels inflate to 10008 bytes: a download may take 2x that, 20016 bytes.
    data_dir = tmp_path / "data"
    fake_idx(data_dir / "mnist")
    (data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()  # only the labels to fetch
    body = b"\x1f\x8b" + bytes(100_000)
    headers = {"Content-Length": str(len(body))} if announced else {}
    url = serve_routes({"/t10k-labels-idx1-ubyte.gz": (200, headers, body)})
    reason = ("the server announces 100002 bytes, more than the limit of 20016 bytes for "
              "t10k-labels-idx1-ubyte.gz (a wrong or hostile file); not downloaded"
              if announced else
              "more than the limit of 20016 bytes for t10k-labels-idx1-ubyte.gz (a wrong or "
              "hostile file); download stopped")
    with pytest.raises(DatasetNotFoundError, match=re.escape(
        f"download failed: {url}t10k-labels-idx1-ubyte.gz: {reason}"
    )):
        load_dataset("mnist", "test", data_dir=data_dir, progress=False, mirrors=[url],
                     timeout=5, allow_http_loopback=True)
    assert sorted(p.name for p in (data_dir / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz"]  # no partial file


def test_downloaded_bomb_is_refused_and_removed(gzip_bomb, tmp_path, serve):
    # 1 MB on the wire (under the download limit), 1 GiB inflated, a header declaring 60000
    # images for the 10000-image test split: refused at the header of the temporary file.
    served = tmp_path / "mirror"
    gzip_bomb(struct.pack(">BBBBIII", 0, 0, 8, 3, 60000, 28, 28), 2**30,
              name="t10k-images-idx3-ubyte.gz", directory=served)
    url = serve(served)
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError, match=re.escape(
        f"download failed: {url}t10k-images-idx3-ubyte.gz: the downloaded file: header "
        "declares 60000x28x28 = 47040000 bytes of data, more than the limit of 7840000 bytes"
    )):
        load_dataset("mnist", "test", data_dir=data_dir, progress=False, mirrors=[url],
                     timeout=5, allow_http_loopback=True)
    assert list((data_dir / "mnist").iterdir()) == []
