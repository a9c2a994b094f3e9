"""Micro-batching: single images from concurrent requests run together, and the function that
turns a batch into class probabilities."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["Batcher", "probabilities"]


def probabilities(model: Any, images: list[np.ndarray]) -> list[list[float]]:
    """Class probabilities (rounded to 6 places) for uint8 model inputs (C, H, W), from the
    model's engine."""
    logits = model.runner.logits_uint8(np.stack(images), batch_size=len(images))
    # the softmax in numpy: PyTorch's thread pool, woken by even a tiny softmax, spins for a
    # millisecond after each batch, which cost a whole core of a 2-core machine
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.round(z / z.sum(axis=1, keepdims=True), 6).tolist()


class Batcher:
    """Collects single images from concurrent requests and runs them as batches.

    Requests that queue up while a batch runs form the next batch (up to ``max_batch_size``);
    with ``max_delay_s`` > 0 a batch also waits that long for more.
    """

    def __init__(self, run: Callable[[list[np.ndarray]], list[Any]], max_batch_size: int,
                 max_delay_s: float, in_thread: bool = False) -> None:
        self.run = run
        self.in_thread = in_thread
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[Any]]] | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def submit(self, x: np.ndarray) -> Any:
        assert self.queue is not None, "Batcher.start() runs in the app's lifespan"
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.queue.put((x, fut))
        return await fut

    async def _loop(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            # whatever queued up while the last batch ran joins at once; then, with a delay
            # set, wait up to that long for more
            while len(items) < self.max_batch_size and not self.queue.empty():
                items.append(self.queue.get_nowait())
            deadline = loop.time() + self.max_delay_s
            while len(items) < self.max_batch_size:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), timeout))
                except TimeoutError:
                    break
            try:
                images = [x for x, _ in items]
                # in the event loop by default: on 2 cores, handing each batch to a worker
                # thread cost more (thread wake-ups, the GIL changing hands) than it saved
                probs = (await loop.run_in_executor(None, self.run, images) if self.in_thread
                         else self.run(images))
            except Exception as e:  # a failing batch fails its requests, not the loop
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), p in zip(items, probs, strict=True):
                if not fut.done():
                    fut.set_result(p)
