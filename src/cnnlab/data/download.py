"""Downloads of dataset files: https only (plain http only from a loopback test server, when
asked), redirects to plain http refused, the size capped before and while streaming, and the
file verified before it is renamed into place, so nothing unverified is ever left behind."""

from __future__ import annotations

import http.client
import ipaddress
import os
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from cnnlab._io import atomic_path
from cnnlab.errors import DataError
from cnnlab.progress import Progress

if TYPE_CHECKING:
    from cnnlab.data.datasets import IdxFile

__all__ = ["download_file", "insecure_url_problem"]


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_url_problem(url: str, allow_http_loopback: bool) -> str | None:
    """Why ``url`` may not be downloaded from, or None when it may."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and allow_http_loopback and _is_loopback(parts.hostname):
        return None
    if parts.scheme == "http" and _is_loopback(parts.hostname):
        return ("plain http is accepted only from a loopback test server, with "
                "allow_http_loopback=True")
    return ("downloads use https only, so nobody on the way can read or replace the file; use "
            "an https mirror")


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects only to URLs a download may use (an https mirror may not hand
    the client to plain http)."""

    def __init__(self, allow_http_loopback: bool) -> None:
        self.allow_http_loopback = allow_http_loopback

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: http.client.HTTPMessage, newurl: str
                         ) -> urllib.request.Request | None:
        problem = insecure_url_problem(newurl, self.allow_http_loopback)
        if problem:
            fp.close()  # urllib closes it only on the way it follows
            raise DataError(f"redirected to {newurl}, refused: not an https URL: {problem}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch(url: str, dest: Path, spec: IdxFile, timeout: float, progress: bool,
           allow_http_loopback: bool, verify: Callable[[Path], object]) -> None:
    """Stream ``url`` into ``dest`` (at most ``spec.max_download_bytes``), then ``verify`` the
    file before it is renamed into place."""
    problem = insecure_url_problem(url, allow_http_loopback)
    if problem:
        raise DataError(f"refused: not an https URL: {problem}")
    cap = spec.max_download_bytes
    opener = urllib.request.build_opener(_HttpsOnlyRedirects(allow_http_loopback))
    with atomic_path(dest) as tmp:
        with opener.open(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if cap is not None and total is not None and total > cap:
                raise DataError(
                    f"the server announces {total} bytes, more than the limit of {cap} bytes "
                    f"for {spec.name}.gz (a wrong or hostile file); not downloaded"
                )
            bar = Progress(total, f"download {spec.name}.gz", "B", enabled=progress,
                           scale=1 / 2**20, scale_unit="MiB")
            with bar, tmp.open("wb") as out:
                while chunk := response.read(1 << 16):
                    if cap is not None and bar.count + len(chunk) > cap:
                        raise DataError(
                            f"more than the limit of {cap} bytes for {spec.name}.gz (a wrong "
                            "or hostile file); download stopped"
                        )
                    out.write(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())  # on disk before the rename makes it visible
            if total is not None and bar.count != total:
                raise DataError(f"incomplete: got {bar.count} of {total} bytes")
        verify(tmp)


def download_file(
    spec: IdxFile,
    target: Path,
    mirrors: Sequence[str],
    timeout: float,
    progress: bool,
    failures: list[str],
    verify: Callable[[Path], object],
    allow_http_loopback: bool = False,
) -> Path | None:
    """Fetch ``<mirror><name>.gz`` into ``target`` and verify it; None if every mirror failed.

    Each failure is appended to ``failures`` as "url: reason". Nothing unverified is left in
    ``target``: the file streams into a temporary name and is renamed only once it passed.
    """
    dest = target / f"{spec.name}.gz"
    for mirror in mirrors:
        url = mirror.rstrip("/") + f"/{spec.name}.gz"
        try:
            _fetch(url, dest, spec, timeout, progress, allow_http_loopback, verify)
            return dest
        except (OSError, http.client.HTTPException, DataError) as e:
            failures.append(f"{url}: {e}")
    return None


