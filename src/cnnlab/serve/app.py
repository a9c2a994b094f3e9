"""The prediction service: FastAPI on uvicorn, micro-batched inference, Prometheus metrics.

Endpoints (JSON in and out; every error is ``{"error": {"type": ..., "message": ...}}``):

- ``POST /v1/predict``: one image as multipart (field ``file``), as a raw ``image/png`` or
  ``image/jpeg`` body, or as JSON ``{"image": "<base64>"}`` or ``{"pixels": [[...], ...]}``
  (an H x W array in the model's size, 0-255 or 0-1). Returns the label, every class's
  probability, the top k, the model version, the server-side latency and a ``prediction_id``;
  with ``?include_input=true`` also the input the model saw (H x W, 0-255).
- ``POST /v1/predict/batch``: many images (multipart ``files``, or JSON ``{"images": [...]}``
  of base64 strings).
- ``POST /v1/feedback``: the true class of a recent prediction, stored with its input.
- ``POST /v1/admin/reload``: serve another model without downtime (admin token).
- ``GET /v1/health``, ``GET /v1/model``, ``GET /metrics`` (Prometheus text format), the web
  page at ``/`` and the OpenAPI docs at ``/docs``, served without a CDN.

Layout, as FastAPI's "bigger applications": :mod:`~cnnlab.serve.state` (settings and the one
state object on ``app.state.service``), :mod:`~cnnlab.serve.dependencies`, one router per
concern in :mod:`cnnlab.serve.routers`, and :mod:`~cnnlab.serve.decode`,
:mod:`~cnnlab.serve.batching`, :mod:`~cnnlab.serve.metrics`, :mod:`~cnnlab.serve.middleware`
and :mod:`~cnnlab.serve.errors`. Client mistakes get 400, 413, 415 or 422; 500 is left for
real bugs, each logged with its traceback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI

from cnnlab.serve.decode import content_type
from cnnlab.serve.errors import install_error_handlers
from cnnlab.serve.middleware import Guard
from cnnlab.serve.routers import admin, docs, explain, feedback, info, predict
from cnnlab.serve.state import ServeSettings, ServiceState

__all__ = ["ServeSettings", "Service", "create_app"]


class Service(FastAPI):
    """FastAPI, with raw-image and JSON predictions handed to their plain ASGI handler
    (behind its own guard) before the framework's middleware stack and routing: the path most
    requests take skips both (benchmarks/bench_serve.py measures it)."""

    fast_path: Guard | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (self.fast_path is not None and scope["type"] == "http"
                and scope["path"] == "/v1/predict" and scope["method"] == "POST"
                and content_type(scope) != "multipart/form-data"):
            await self.fast_path(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    batcher = app.state.service.batcher
    batcher.start()
    yield
    await batcher.stop()


def create_app(settings: ServeSettings | None = None) -> Service:
    """The application serving ``settings.checkpoint`` (default settings without).

    Raises:
        CheckpointError: the checkpoint cannot be loaded.
        ConfigError: the feedback store cannot be opened.
    """
    state = ServiceState.open(settings or ServeSettings())
    app = Service(title="cnnlab", version=state.version, lifespan=lifespan,
                  description="Image classification with a cnnlab model.",
                  docs_url=None, redoc_url=None)  # routers.docs serves /docs without a CDN
    app.state.service = state
    install_error_handlers(app)
    for router in (predict.router, explain.router, feedback.router, admin.router, info.router,
                   docs.router):
        app.include_router(router)
    limit = state.settings.max_body_bytes
    app.add_middleware(Guard, max_body=limit, metrics=state.metrics)
    app.fast_path = Guard(None, max_body=limit, metrics=state.metrics,
                          raw=partial(predict.predict_raw, state))
    return app
