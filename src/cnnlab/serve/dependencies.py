"""FastAPI dependencies: the service's state, and the admin token check."""

from __future__ import annotations

import hmac
import os
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cnnlab.serve.errors import ClientError
from cnnlab.serve.state import ServiceState

__all__ = ["ADMIN_TOKEN_ENV", "State", "get_state", "require_admin"]

ADMIN_TOKEN_ENV = "CNNLAB_ADMIN_TOKEN"


def get_state(request: Request) -> ServiceState:
    """The one state object of the app serving ``request``."""
    return request.app.state.service


State = Annotated[ServiceState, Depends(get_state)]

# auto_error=False: a missing or malformed header gets our 401 body, not FastAPI's; the scheme
# also shows the "Authorize" button on /docs
_bearer = HTTPBearer(auto_error=False, scheme_name="admin token",
                     description=f"the value of ${ADMIN_TOKEN_ENV} on the server")


def require_admin(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Let the request through only with ``Authorization: Bearer $CNNLAB_ADMIN_TOKEN``.

    The token is read per request, so it can be set or rotated without a restart, and
    compared in constant time.

    Raises:
        ClientError: 403 when the variable is unset (admin endpoints off), 401 for a missing
            or wrong token.
    """
    token = os.environ.get(ADMIN_TOKEN_ENV)
    if not token:
        raise ClientError(403, "forbidden", f"admin endpoints are off: start the service "
                          f"with {ADMIN_TOKEN_ENV} set")
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise ClientError(401, "unauthorized", f"missing or wrong admin token (send "
                          f"Authorization: Bearer <{ADMIN_TOKEN_ENV}>)")
