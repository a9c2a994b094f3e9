"""``GET /v1/health``, ``/v1/model``, ``/metrics`` (Prometheus) and the web page at ``/``."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, PlainTextResponse

from cnnlab.serve.dependencies import State

__all__ = ["router"]

router = APIRouter(tags=["info"])

PAGE = Path(__file__).resolve().parents[1] / "static" / "index.html"


@router.get("/v1/health")
async def health(state: State) -> dict[str, Any]:
    return {"status": "ok", "model_version": state.version}


@router.get("/v1/model")
async def model_info(state: State) -> dict[str, Any]:
    """What is being served: classes, input size, preprocessing, metrics, engine, version."""
    model = state.model
    spec = model.input_spec
    metrics = {k: v for k, v in model.metrics.items() if isinstance(v, int | float | str)
               and not (isinstance(v, float) and math.isnan(v))}
    return {"version": state.version, "path": model.path, "engine": model.engine,
            "name": model.config.get("model", {}).get("name"),
            "recipe": model.config.get("recipe"), "classes": model.classes,
            "input": {"channels": spec.channels, "height": spec.height, "width": spec.width},
            "preprocessing": model.preprocessing, "metrics": metrics}


@router.get("/metrics", response_class=PlainTextResponse)
async def prometheus(state: State) -> PlainTextResponse:
    """Prometheus text format: requests, errors, latency, predictions, batches, feedback,
    drift, decoding."""
    return PlainTextResponse(state.metrics.text(state.version) + state.decoder.metrics_text(),
                             media_type="text/plain; version=0.0.4; charset=utf-8")


@cache
def _page() -> str:
    if PAGE.is_file():
        return PAGE.read_text()
    return ("<!DOCTYPE html><title>cnnlab</title><p>cnnlab prediction service: see "
            "<a href=\"/docs\">/docs</a>.</p>")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    """The web page: draw or upload an image, see the answer, confirm or correct it."""
    return HTMLResponse(_page())
