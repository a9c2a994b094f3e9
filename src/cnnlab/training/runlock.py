"""One writer per run directory: an OS file lock that the kernel releases when its process dies.

Two ``cnnlab train`` runs on the same ``--out`` would otherwise both finish with exit 0 and
leave a ``model.pt`` whose config comes from one and whose weights from the other. Whatever
writes a run (``fit``, cross-validation, fine-tuning, retraining, the CLI's report after
training) holds :func:`run_lock` on the directory: a second process fails at once with
:class:`RunDirectoryInUse`, naming the directory and the process that holds it.

The lock is ``fcntl.flock`` on ``<run>/.cnnlab.lock``. The kernel drops it when the holder's
last descriptor closes, so a run killed with ``kill -9`` leaves no stale lock behind: the file
stays, but nothing holds it (its contents, the holder's pid and command, are only for the
message). Within one process the lock is re-entrant (``fit`` inside the CLI's lock), since a
second ``flock`` on a new descriptor of the same file would wait for this very process. In a
distributed run (torchrun) rank 0 holds it: the other ranks write nothing there.

Opening the lock is also the first write into the run directory, so a ``--out`` that is a file
or cannot be written is refused here, before any data is loaded or any epoch trained.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from cnnlab.errors import ConfigError

__all__ = ["LOCK_NAME", "RunDirectoryInUse", "locks_run_dir", "run_lock"]

LOCK_NAME = ".cnnlab.lock"

P = ParamSpec("P")
R = TypeVar("R")

# resolved directory -> (descriptor, depth): the locks this process holds
_held: dict[Path, tuple[int, int]] = {}
_guard = threading.Lock()


class RunDirectoryInUse(ConfigError):
    """Another process is writing the run directory."""


def _holder(lock_file: Path) -> str:
    """Who holds the lock, as its holder wrote it: ``pid 123 on host, `cnnlab train ...`,
    since 12:00:00 UTC``; a plain 'another process' when the file says nothing readable."""
    try:
        info = json.loads(lock_file.read_text())
        since = time.strftime("%H:%M:%S UTC", time.gmtime(float(info["since"])))
        return f"pid {int(info['pid'])} on {info['host']} (`{info['command']}`, since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _open_lock_file(directory: Path) -> int:
    """Create the run directory if needed and open its lock file.

    Raises:
        ConfigError: the path is a file, or the directory cannot be created or written.
    """
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"the run directory {str(directory)!r} is a file, not a directory; "
                          "choose a directory path (it is created if missing)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except (FileExistsError, NotADirectoryError) as e:
        blocking = next((str(p) for p in reversed(directory.parents) if p.is_file()), None)
        raise ConfigError(f"the run directory {str(directory)!r} cannot be made: "
                          f"{repr(blocking) + ' is a file' if blocking else e.strerror}; "
                          "choose another directory") from e
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            why = "it is on a read-only file system" if e.errno == errno.EROFS else \
                "permission denied"
            raise ConfigError(f"cannot write to the run directory {str(directory)!r}: {why}; "
                              "choose a directory you can write to") from e
        raise


@contextmanager
def run_lock(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the run directory ``directory`` (created if missing) for the block.

    Raises:
        RunDirectoryInUse: another process holds it; the message names the process.
        ConfigError: ``directory`` is a file or cannot be written.
    """
    import fcntl

    path = Path(directory)
    if int(os.environ.get("RANK", "0") or 0) != 0:
        yield path  # a torchrun rank other than 0: rank 0 writes (and holds) the run
        return
    key = path.resolve()
    with _guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
        else:
            fd = _open_lock_file(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunDirectoryInUse(
                    f"the run directory {str(path)!r} is in use by {_holder(path / LOCK_NAME)}; "
                    "wait for that run to finish, or choose another run directory") from None
            except BaseException:
                os.close(fd)
                raise
            _held[key] = (fd, 1)
            _write_holder(fd)
    try:
        yield path
    finally:
        with _guard:
            fd, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, depth - 1)
            else:
                del _held[key]
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


def _write_holder(fd: int) -> None:
    """Say who holds the lock, for the message another process shows; best effort (a full
    disk must not stop the run from starting: the lock itself is the kernel's)."""
    command = " ".join(["cnnlab", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith(
        "cnnlab") else " ".join(sys.argv) or "python"
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "command": command[:200], "since": time.time()})
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
    except OSError:
        pass


def locks_run_dir(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a function that writes the run directory given as its ``out_dir`` keyword:
    it runs holding :func:`run_lock` on that directory (without one, it runs as it is)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        out: Any = kwargs.get("out_dir")
        if out is None:
            return func(*args, **kwargs)
        with run_lock(out):
            return func(*args, **kwargs)

    return wrapper
