"""How errors become HTTP answers: one body shape, statuses chosen by exception type.

Every error answer is ``{"error": {"type": ..., "message": ...}}``. A request the client must
fix raises :class:`ClientError` with its status; a library error is mapped by its class
(:data:`STATUS_BY_ERROR`, most specific class first), never by its message text. Anything
else is a bug: 500, logged with its traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from cnnlab.errors import CnnlabError, ImageTooLargeError
from cnnlab.feedback.store import DuplicateFeedback

__all__ = ["STATUS_BY_ERROR", "ClientError", "error_body", "install_error_handlers",
           "status_of"]

log = logging.getLogger("cnnlab.serve")

try:
    from orjson import dumps as dumps
except ImportError:  # orjson comes with cnnlab[serve]; the standard library does the same job
    def dumps(obj: Any) -> bytes:  # type: ignore[misc]
        return json.dumps(obj, separators=(",", ":")).encode()

# library errors with a status of their own, wherever they are raised; the MRO is walked, so
# a subclass listed here wins over its base class's context-given status
STATUS_BY_ERROR: dict[type[Exception], tuple[int, str]] = {
    ImageTooLargeError: (413, "payload_too_large"),  # pixel count over the limit, bombs
    DuplicateFeedback: (409, "duplicate"),
}


class ClientError(Exception):
    """A request the client must fix: ``status`` and an error ``kind`` for the body."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message

    @classmethod
    def of(cls, exc: CnnlabError, status: int, kind: str) -> ClientError:
        """``exc`` as a client error: the status its class has in :data:`STATUS_BY_ERROR`,
        else ``status`` and ``kind`` (what the failing step means for this request)."""
        return cls(*(status_of(exc) or (status, kind)), str(exc))


def status_of(exc: BaseException) -> tuple[int, str] | None:
    """The status and error kind :data:`STATUS_BY_ERROR` gives ``exc``'s class, if any."""
    return next((STATUS_BY_ERROR[k] for k in type(exc).__mro__ if k in STATUS_BY_ERROR), None)


def error_body(kind: str, message: str) -> bytes:
    return dumps({"error": {"type": kind, "message": message}})


def install_error_handlers(app: Any) -> None:
    """Answer client errors, schema errors, unknown paths and mapped library errors in the
    one body shape."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import Response
    from starlette.exceptions import HTTPException

    def answer(status: int, kind: str, message: str) -> Response:
        return Response(error_body(kind, message), status_code=status,
                        media_type="application/json")

    @app.exception_handler(ClientError)
    async def client_error(request: Any, exc: ClientError) -> Response:
        if exc.status == 500:
            log.error("%s %s: %s", request.method, request.url.path, exc.message,
                      exc_info=exc)
        elif exc.status > 500:  # the service is busy, not broken
            log.warning("%s %s: %s", request.method, request.url.path, exc.message)
        return answer(exc.status, exc.kind, exc.message)

    @app.exception_handler(CnnlabError)
    async def library_error(request: Any, exc: CnnlabError) -> Response:
        mapped = status_of(exc)
        if mapped is not None:
            return answer(*mapped, str(exc))
        # a library error the endpoint did not expect: a bug in the endpoint
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return answer(500, "internal_error", "internal error; see the server log")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Any, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            return answer(400, "bad_request", f"the body is not valid JSON: "
                          f"{first.get('ctx', {}).get('error', first.get('msg'))}")
        where = ".".join(str(x) for x in first.get("loc", ()))
        return answer(422, "validation_error", f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Any, exc: HTTPException) -> Response:
        kind = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                413: "payload_too_large"}.get(exc.status_code, "http_error")
        if exc.status_code >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc.detail, exc_info=exc)
        return answer(exc.status_code, kind, str(exc.detail))
