"""A throwaway PostgreSQL cluster for the feedback-store tests: Debian's ``postgresql`` package
(``initdb`` and ``pg_ctl`` from ``/usr/lib/postgresql/<version>/bin``) started on a Unix socket in
a temporary directory, no TCP port; stopped and deleted at the end of the session.

PostgreSQL refuses to run as root: as root the cluster belongs to the ``postgres`` user that
the package creates, and its commands run through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["postgres_cluster", "unavailable"]


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def unavailable() -> str | None:
    """Why no cluster can be started here, or None when one can."""
    if _bin_dir() is None:
        return ("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                "apt-get install postgresql (.ci/run does where it can)")
    try:
        import psycopg  # noqa: F401  # the driver SQLAlchemy's postgresql+psycopg URL uses
    except ImportError:
        return "the PostgreSQL driver is not installed: pip install 'cnnlab[postgres]'"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no 'postgres' user to run the cluster as"
        if shutil.which("runuser") is None:
            return "running as root without runuser to start the cluster as 'postgres'"
    return None


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """Start a cluster; yield its SQLAlchemy URL (``postgresql+psycopg://``, database
    ``cnnlab``, over the socket)."""
    bin_dir = _bin_dir()
    assert bin_dir is not None
    # not under pytest's tmp_path: that is private to root, and the server may run as postgres
    base = Path(tempfile.mkdtemp(prefix="cnnlab-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    as_user: list[str] = []
    user = pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        for p in (base, sock):
            os.chown(p, entry.pw_uid, entry.pw_gid)
        as_user, user = ["runuser", "-u", "postgres", "--"], "postgres"

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=trust",
            "--no-sync", "-E", "UTF8")
        # sockets only, in our directory; fsync on, as the store's durability claim needs
        options = f"-c listen_addresses='' -c unix_socket_directories={sock} -c port=5433"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-t", "60",
            "-l", str(base / "server.log"), "start")
        try:
            run(str(bin_dir / "createdb"), "-h", str(sock), "-p", "5433", "-U", user, "cnnlab")
            yield f"postgresql+psycopg://{user}@/cnnlab?host={sock}&port=5433"
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)
