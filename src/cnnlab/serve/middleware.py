"""The guard in front of every request: body size, unhandled errors, request metrics.

A pure ASGI middleware (cheaper per request than Starlette's ``BaseHTTPMiddleware``). It
refuses a body whose declared length is over the limit with 413 before reading it, and counts
the bytes every ``receive()`` hands on, so a body without a Content-Length (chunked) or with a
false one stops being read at the limit too: :class:`BodyTooLarge` is raised inside the
reading endpoint, whatever form it parses (JSON, raw image, multipart), and answered 413. It
turns an unhandled exception into a JSON 500 logged with its traceback, and counts every
request with its status and latency. The same guard wraps the plain ASGI handler of the fast
predict path (:func:`cnnlab.serve.routers.predict.predict_raw`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException

from cnnlab.serve.errors import error_body
from cnnlab.serve.metrics import Metrics

__all__ = ["BodyTooLarge", "Guard", "limited_receive", "send_json"]

log = logging.getLogger("cnnlab.serve")

# a plain ASGI handler that returns False when the client went away before the answer
RawHandler = Callable[[Any, Any, Any], Awaitable[bool]]


async def send_json(send: Any, status: int, body: bytes) -> None:
    """Send a complete JSON response."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(HTTPException):
    """The request body went over the limit while being read (413).

    An ``HTTPException`` so that FastAPI's body parsing re-raises it as it is (it turns other
    exceptions into a 400) and the app's handler answers it in the one error shape."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds the limit of {limit:,} bytes; send "
                              "a smaller image (or fewer of them)")


def limited_receive(receive: Any, limit: int) -> Any:
    """``receive`` that raises :class:`BodyTooLarge` once the request's body bytes pass
    ``limit``: nothing beyond the limit is kept."""
    seen = 0

    async def receive_within_limit() -> Any:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_within_limit


class Guard:
    """See the module docstring; ``raw``, when given, is guarded instead of ``app``."""

    def __init__(self, app: Any, *, max_body: int, metrics: Metrics,
                 raw: RawHandler | None = None) -> None:
        self.app, self.max_body, self.metrics, self.raw = app, max_body, metrics, raw

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        state = {"status": 500, "started": False}
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            if int(length) <= 8 * self.max_body:
                # read and drop a moderately large body, so the client sees the 413 instead
                # of a connection reset; beyond that, the connection is simply closed
                while (await receive()).get("more_body"):
                    pass
            await send_json(send, 413, error_body(
                "payload_too_large", f"the request body of {int(length):,} bytes exceeds the "
                f"limit of {self.max_body:,} bytes"))
            state["status"] = 413
        else:
            async def tracked(message: Any) -> None:
                if message["type"] == "http.response.start":
                    state["status"], state["started"] = message["status"], True
                await send(message)

            receive = limited_receive(receive, self.max_body)
            try:
                if self.raw is not None:
                    if not await self.raw(scope, receive, tracked):
                        state["status"] = 499  # the client closed the connection
                else:
                    await self.app(scope, receive, tracked)
            except BodyTooLarge as e:  # raised outside a route (the fast path)
                if state["started"]:
                    raise
                await send_json(send, 413, error_body("payload_too_large", str(e.detail)))
                state["status"] = 413
            except Exception:  # a bug: report it as such, keep serving
                log.exception("%s %s failed", scope.get("method"), scope["path"])
                if state["started"]:
                    raise
                await send_json(send, 500, error_body("internal_error",
                                                      "internal error; see the server log"))
                state["status"] = 500
        self.metrics.request(scope["path"], int(state["status"]),
                             (time.perf_counter() - t0) * 1000)
