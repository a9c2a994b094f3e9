"""Keep data tests hermetic (no $CNNLAB_DATA_DIR from the caller, a private cache dir), and
make gzip bombs."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_lookup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CNNLAB_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def make_gzip_bomb(header: bytes, zeros: int) -> bytes:
    """A valid gzip file of ``header`` then ``zeros`` zero bytes, about 1 KB per MiB.

    Built as a run of identical gzip members (one MiB of zeros each; gzip readers must
    concatenate members), so a 1 GiB bomb costs milliseconds to make instead of seconds.
    """
    mib = 1 << 20
    count, rest = divmod(zeros, mib)
    member = gzip.compress(bytes(mib), compresslevel=9, mtime=0)
    return b"".join([
        gzip.compress(header, mtime=0),
        member * count,
        gzip.compress(bytes(rest), compresslevel=9, mtime=0) if rest else b"",
    ])


@pytest.fixture
def gzip_bomb(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing :func:`make_gzip_bomb` output to a file; returns its path."""

    def write(header: bytes, zeros: int, name: str = "bomb-idx3-ubyte.gz",
              directory: Path | None = None) -> Path:
        path = (directory or tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(make_gzip_bomb(header, zeros))
        return path

    return write
