"""Small file and JSON helpers every floor may use: atomic writes and JSON-safe values.

A crash during a write leaves either the old file or the new one, never half of one; a write
that fails for want of space or permission raises one clear error (:func:`write_failure`).
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "clean_json",
           "quiet_disk_errors_in_threads", "write_failure"]


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    Readers never see a half-written file, and a failed write leaves no partial file behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(file_object)`` on a temp file next to ``path``, then rename it into place,
    after the data is on disk (fsync)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the rename makes it visible
    except Exception as e:
        clear = write_failure(e, path)
        if clear is None:
            raise
        raise clear from e
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    data = text.encode()
    return atomic_write_bytes(path, lambda f: f.write(data))


def clean_json(obj: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by None, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: clean_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean_json(v) for v in obj]
    return obj


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``: itself, or one it was raised from or while handling (torch
    turns a failed write into ``RuntimeError: ... unexpected pos``, with the OSError as its
    context)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError) and cur.errno is not None:
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def write_failure(exc: BaseException, path: str | os.PathLike[str] | None = None
                  ) -> Exception | None:
    """The clear error for a write that failed with ``exc``, or None when it is no failure of
    the disk: :class:`~cnnlab.errors.DiskFullError` for a full device (or quota), a
    :class:`~cnnlab.errors.ConfigError` for a read-only file system or, with ``path`` (the
    caller knows it was writing), a permission denied. Each names the file and the fix."""
    from cnnlab.errors import CnnlabError, ConfigError, DiskFullError

    if isinstance(exc, CnnlabError):
        return None
    err = _os_error(exc)
    if err is None:
        return None
    known = path if path is not None else err.filename
    target = str(known) if known is not None else None
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        if target is None:
            return DiskFullError(
                "no space left on the device while writing; free some space or choose another "
                "directory, then run again (files written atomically were left as they were)")
        where = Path(target).parent
        while not where.exists() and where != where.parent:
            where = where.parent
        try:
            free = f"{shutil.disk_usage(where).free / 1e6:.1f} MB free there"
        except OSError:
            free = "its free space unknown"
        return DiskFullError(
            f"no space left on the device to write {target} ({free}); free some space or "
            "choose another directory, then run again (the file was not written; an earlier "
            "version of it is unchanged)")
    if err.errno == errno.EROFS or (path is not None and err.errno in (errno.EACCES,
                                                                       errno.EPERM)):
        why = "the file system is read-only" if err.errno == errno.EROFS else "permission denied"
        return ConfigError(f"cannot write {target or 'a file'}: {why}; choose a directory you "
                           "can write to")
    return None


def quiet_disk_errors_in_threads() -> None:
    """Let background writer threads (TensorBoard's) die of a full or read-only disk without
    printing a traceback: the main thread meets the same failure and reports it in one line.
    Any other exception of a thread is printed as before."""
    import threading

    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None and write_failure(args.exc_value) is not None:
            return
        previous(args)

    threading.excepthook = hook
