"""Image decoding off the event loop: a few worker threads, a bounded number of decodes at a
time, and a time budget per request.

Pillow decodes and shrinks with the GIL released, so a large image decoding on a worker
thread leaves the event loop free to answer ``/v1/health`` and the small requests; the
semaphore keeps the number of large decodes in memory at once to the number of workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from cnnlab.serve.errors import ClientError

__all__ = ["DecodePool"]

T = TypeVar("T")

# how much nicer than the event loop the decode workers run: the loop (small requests, health)
# gets the CPU first while a large image decodes (benchmarks/bench_serve.py --hostile)
WORKER_NICENESS = 5


def _yield_to_the_loop() -> None:
    """Lower the calling worker thread's CPU priority (Linux gives each thread its own nice
    value; elsewhere this does nothing)."""
    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid,
                       min(19, os.getpriority(os.PRIO_PROCESS, tid) + WORKER_NICENESS))


class DecodePool:
    """Runs decoding functions on ``workers`` threads, each request within ``timeout_s``.

    A request that waits longer than the budget for a free worker, or whose decoding takes
    longer, gets a 503; a decode that ran past its budget still holds its worker until it
    ends (a thread cannot be stopped), so the bound on concurrent decodes always holds.
    """

    def __init__(self, workers: int, timeout_s: float) -> None:
        self.workers, self.timeout_s = workers, timeout_s
        self._threads = ThreadPoolExecutor(max_workers=workers,
                                           thread_name_prefix="cnnlab-decode",
                                           initializer=_yield_to_the_loop)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self.busy_refusals = 0  # requests answered 503: no worker free within the budget
        self.timeouts = 0  # requests answered 503: decoding ran past the budget
        self.in_flight = 0  # decodes running now, abandoned ones included

    def _semaphore(self) -> asyncio.Semaphore:
        # one per event loop: a test client may run the same app on several loops in turn
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:
            self._loop, self._slots = loop, asyncio.Semaphore(self.workers)
        return self._slots

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a worker thread.

        Raises:
            ClientError: 503 when no worker came free, or the decoding did not end, within
                the time budget; and whatever ``fn`` raises.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        slots = self._semaphore()
        try:
            await asyncio.wait_for(slots.acquire(), self.timeout_s)
        except TimeoutError:
            self.busy_refusals += 1
            raise ClientError(503, "busy", f"every image decoder stayed busy for the time "
                              f"budget of {self.timeout_s:g} s; retry later") from None
        future = loop.run_in_executor(self._threads, fn, *args)
        self.in_flight += 1

        def done(f: asyncio.Future[Any]) -> None:
            self.in_flight -= 1
            slots.release()
            if not f.cancelled():
                f.exception()  # retrieved, so an abandoned decode's error is not reported

        future.add_done_callback(done)
        try:
            # shielded: a request that gives up must not free the worker before it is free
            return await asyncio.wait_for(asyncio.shield(future),
                                          max(deadline - loop.time(), 0.0))
        except TimeoutError:
            self.timeouts += 1
            raise ClientError(503, "decode_timeout", f"decoding the image took longer than "
                              f"the time budget of {self.timeout_s:g} s; send a smaller "
                              "image") from None

    def metrics_text(self) -> str:
        """The pool's figures in Prometheus' text format."""
        return "\n".join([
            "# HELP cnnlab_decodes_in_flight Large images decoding on the workers now.",
            "# TYPE cnnlab_decodes_in_flight gauge", f"cnnlab_decodes_in_flight {self.in_flight}",
            "# HELP cnnlab_decode_refusals_total Requests answered 503 by the decoding time "
            "budget, by reason.",
            "# TYPE cnnlab_decode_refusals_total counter",
            f'cnnlab_decode_refusals_total{{reason="busy"}} {self.busy_refusals}',
            f'cnnlab_decode_refusals_total{{reason="timeout"}} {self.timeouts}']) + "\n"

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
