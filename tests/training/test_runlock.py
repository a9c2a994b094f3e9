"""One writer per run directory: a second process fails at once, a killed one leaves no lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cnnlab.training.runlock import LOCK_NAME, RunDirectoryInUse, locks_run_dir, run_lock

# holds the lock on argv[1], says so on stdout, then sleeps until killed
_HOLDER = textwrap.dedent("""
    import sys, time
    from cnnlab.training.runlock import run_lock
    with run_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)
""")


def _hold_in_subprocess(directory: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(directory)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)  # kill -9: no cleanup code runs in it
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


def test_second_process_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _hold_in_subprocess(run)
    try:
        t0 = time.perf_counter()
        with pytest.raises(RunDirectoryInUse) as e, run_lock(run):
            pass
        assert time.perf_counter() - t0 < 1.0  # at once, not after a wait
        message = str(e.value)
        assert str(run) in message and f"pid {proc.pid}" in message
        assert "choose another run directory" in message
    finally:
        _stop(proc)
    assert (run / LOCK_NAME).is_file()  # the file stays, but the kernel released the lock
    with run_lock(run):
        assert f'"pid": {os.getpid()}' in (run / LOCK_NAME).read_text()


def _other_holder(directory: Path) -> int:
    """Hold the lock as another process would: flock on a descriptor of our own (flock
    conflicts between open file descriptions, even within one process)."""
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the lock is still held
    return fd


def test_reentrant_within_a_process_and_released_after(tmp_path: Path) -> None:
    # fit inside a CLI-level lock: the same process takes it twice
    with run_lock(tmp_path / "r"), run_lock(tmp_path / "r"), pytest.raises(BlockingIOError):
        _other_holder(tmp_path / "r")
    os.close(_other_holder(tmp_path / "r"))  # released: another holder can take it


def test_decorator_locks_out_dir_only(tmp_path: Path) -> None:
    @locks_run_dir
    def write(*, out_dir: Path | None = None) -> bool:
        return out_dir is None or (out_dir / LOCK_NAME).exists()

    assert write() is True
    assert write(out_dir=tmp_path / "x") is True
    fd = _other_holder(tmp_path / "x")
    try:
        with pytest.raises(RunDirectoryInUse, match="is in use by"):
            write(out_dir=tmp_path / "x")
    finally:
        os.close(fd)


def test_out_that_is_a_file_or_unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from cnnlab.errors import ConfigError

    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"), \
            run_lock(tmp_path / "file"):
        pass
    with pytest.raises(ConfigError, match=r"'.*file' is a file"), \
            run_lock(tmp_path / "file" / "sub"):
        pass

    real_open = os.open

    def read_only(path: object, *args: object, **kw: object) -> int:
        if str(path).endswith(LOCK_NAME):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(ConfigError, match="read-only file system; choose a directory you can"), \
            run_lock(tmp_path / "ro"):
        pass
