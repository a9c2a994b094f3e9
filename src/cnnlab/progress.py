"""Progress display for long work: a tqdm bar with rate and ETA on a terminal, plain periodic
lines otherwise.

Library code reports progress through :class:`Progress`; it writes to stderr only, so a
``--json`` stdout stays machine-readable. ``enabled=False`` silences it (the Python API's
default is quiet unless asked).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

__all__ = ["Progress"]

# tqdm's meter without the bar, for logs: tqdm itself redraws one line with carriage returns,
# which a log file or CI console keeps as one unreadable line per bar
_LINE = ("{desc} {percentage:3.0f}% {n_fmt}/{total_fmt} {unit} "
         "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")
_LINE_NO_TOTAL = "{desc} {n_fmt} {unit} [{elapsed}, {rate_fmt}{postfix}]"


class Progress:
    """Counts units of work (images, bytes, trials) towards ``total``.

    On a terminal tqdm draws a bar with the rate and the ETA, redrawn at most every
    ``interval`` seconds; elsewhere a plain line of the same figures is printed at most every
    ``interval`` seconds (10 by default), and always at the end. ``count`` is in units of work;
    ``scale`` and ``scale_unit`` only change what is shown (bytes as MiB, say).
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
        self._last = 0.0  # when the last plain line was printed
        self._closed = False
        self._bar = tqdm(total=self._shown(total) if total else None, desc=desc, unit=self.unit,
                         unit_scale=scale != 1, file=self.stream, mininterval=self.interval,
                         dynamic_ncols=True) if enabled and self.tty else None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        self.count += n
        if postfix is not None:
            self.set_postfix(postfix)
        if self._bar is not None:
            self._bar.update(self._shown(n))
        elif self.enabled and time.perf_counter() - self._last >= self.interval:
            self._last = time.perf_counter()
            self._print_line()

    def set_postfix(self, postfix: str) -> None:
        self.postfix = postfix
        if self._bar is not None:
            self._bar.set_postfix_str(postfix, refresh=False)

    def close(self, postfix: str | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        if postfix is not None:
            self.set_postfix(postfix)
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._print_line()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def _shown(self, n: int) -> float:
        return n * self.scale if self.scale != 1 else n  # counts stay integers unscaled

    def _print_line(self) -> None:
        line = tqdm.format_meter(
            self._shown(self.count), self._shown(self.total) if self.total else None,
            self.elapsed, prefix=self.desc, unit=self.unit, unit_scale=self.scale != 1,
            postfix=self.postfix or None, bar_format=_LINE if self.total else _LINE_NO_TOTAL)
        self.stream.write(line.strip() + "\n")
        self.stream.flush()
