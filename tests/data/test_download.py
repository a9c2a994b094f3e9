"""Downloading from mirrors, served by a real HTTP server on 127.0.0.1 (never the internet)."""

import functools
import http.server
import re
import shutil
import socket
import threading

import pytest

from cnnlab.data import load_dataset
from cnnlab.errors import DatasetNotFoundError

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
        load_dataset("mnist", "test", data_dir=tmp_path, mirrors=["http://127.0.0.1:9/"])


@pytest.fixture
def serve():
    """Start a loopback HTTP server for a directory; yields its base URL."""
    servers = []

    def start(directory) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # A short poll interval makes shutdown() quick.
        thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join()


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
                      timeout=5)
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
    load_dataset("mnist", "test", data_dir=tmp_path / "d", mirrors=[serve(served)], timeout=5)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "download t10k-images-idx3-ubyte.gz" in captured.err and "MiB" in captured.err


def test_download_with_wrong_checksum_leaves_nothing(fake_idx, tmp_path, serve):
    served = tmp_path / "mirror"
    fake_idx(served)  # valid IDX files, but not MNIST
    url = serve(served)
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", "test", data_dir=data_dir, progress=False, mirrors=[url], timeout=5)
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
                     timeout=2)
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
    assert dataset_info("fashion-mnist").mirrors == (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    )
    assert dataset_info("kmnist").mirrors == ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",)
