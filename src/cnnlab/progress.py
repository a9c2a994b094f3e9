"""Progress display for long work: a live bar on a terminal, plain periodic lines otherwise.

Library code reports progress through :class:`Progress`; it writes to stderr only, so a
``--json`` stdout stays machine-readable. ``enabled=False`` silences it (the Python API's
default is quiet unless asked).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


def _fmt_time(seconds: float) -> str:
    seconds = max(0, int(seconds))
    m, s = divmod(seconds, 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Counts units of work (images, bytes, trials) towards ``total``.

    On a terminal it redraws one line with a bar, the rate and the ETA; elsewhere it prints
    a plain line at most every ``interval`` seconds, and always at the end.
    """

    def __init__(
        self,
        total: int | None,
        desc: str = "",
        unit: str = "it",
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float | None = None,
        scale: float = 1.0,
        scale_unit: str | None = None,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = scale_unit or unit
        self.scale = scale
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.1 if self.tty else 10.0)
        self.count = 0
        self.postfix = ""
        self.start = time.perf_counter()
        self._last = 0.0
        self._closed = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        self.count += n
        if postfix is not None:
            self.postfix = postfix
        now = time.perf_counter()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self._draw(final=False)

    def set_postfix(self, postfix: str) -> None:
        self.postfix = postfix

    def close(self, postfix: str | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        if postfix is not None:
            self.postfix = postfix
        if self.enabled:
            self._draw(final=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def _line(self) -> str:
        elapsed = self.elapsed
        rate = self.count / elapsed if elapsed > 0 else 0.0
        shown = self.count * self.scale
        rate_str = f"{rate * self.scale:,.0f} {self.unit}/s" if rate * self.scale >= 10 else (
            f"{rate * self.scale:.2f} {self.unit}/s")
        parts = [self.desc] if self.desc else []
        if self.total:
            frac = min(1.0, self.count / self.total)
            eta = (self.total - self.count) / rate if rate > 0 else 0.0
            if self.tty:
                width = 24
                filled = int(frac * width)
                parts.append(f"{frac:4.0%} |{'#' * filled}{'.' * (width - filled)}|")
            else:
                parts.append(f"{frac:4.0%}")
            parts.append(f"{shown:,.0f}/{self.total * self.scale:,.0f} {self.unit}")
            parts.append(f"[{_fmt_time(elapsed)}<{_fmt_time(eta)}, {rate_str}]")
        else:
            parts.append(f"{shown:,.0f} {self.unit} [{_fmt_time(elapsed)}, {rate_str}]")
        if self.postfix:
            parts.append(self.postfix)
        return " ".join(parts)

    def _draw(self, final: bool) -> None:
        line = self._line()
        if self.tty:
            self.stream.write("\r\x1b[2K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
