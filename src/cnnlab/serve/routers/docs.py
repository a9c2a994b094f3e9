"""The OpenAPI page ``/docs`` (Swagger UI) with its scripts served by the service itself.

FastAPI's own page loads Swagger UI from a CDN, so it stays blank on a machine without
internet access. The assets here come from the ``fastapi-offline`` package (MIT; it ships
Swagger UI's bundle), installed with ``cnnlab[serve]``. There is no ``/redoc``: ReDoc's page
loads its logo from redoc.ly whatever its options say, so it cannot be offline.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

__all__ = ["ASSETS", "router"]

router = APIRouter(include_in_schema=False)

ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
_SERVED = {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}
_PREFIX = "/static/docs"


@router.get(_PREFIX + "/{name}")
async def asset(name: str) -> FileResponse:
    if name not in _SERVED:
        raise HTTPException(404, f"no asset {name!r}")
    return FileResponse(ASSETS / name, headers={"cache-control": "public, max-age=86400"})


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root, app = request.scope.get("root_path", ""), request.app
    return get_swagger_ui_html(
        openapi_url=root + app.openapi_url, title=app.title + " - Swagger UI",
        oauth2_redirect_url=root + "/docs/oauth2-redirect",
        swagger_js_url=f"{root}{_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{root}{_PREFIX}/favicon.png",
        # no spec validator badge: it would send the spec to validator.swagger.io
        swagger_ui_parameters={"validatorUrl": None})


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()
