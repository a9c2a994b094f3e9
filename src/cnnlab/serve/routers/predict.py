"""``POST /v1/predict`` and ``POST /v1/predict/batch``.

Raw-image and JSON predictions, the path most requests take, are answered by
:func:`predict_raw`, a plain ASGI handler the app calls before FastAPI's middleware and
routing (``cnnlab.serve.app.Service``): on the 2-core reference machine that served
noticeably more requests per second than the route (benchmarks/bench_serve.py). The route
below gives the same answers; it serves multipart uploads and documents every form on /docs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from cnnlab.serve.decode import content_type, images_from_body, images_from_request
from cnnlab.serve.dependencies import State
from cnnlab.serve.errors import ClientError, dumps, error_body
from cnnlab.serve.middleware import send_json
from cnnlab.serve.state import ServiceState

__all__ = ["answer", "predict_one", "predict_raw", "router"]

router = APIRouter(tags=["predict"])


class ClassProbability(BaseModel):
    label: str
    probability: float


class Prediction(BaseModel):
    """One image's answer (documentation only: answers are encoded without validation)."""

    prediction_id: str = Field(description="what POST /v1/feedback refers to")
    label: str = Field(description="the most probable class")
    probabilities: dict[str, float] = Field(description="every class's probability")
    top_k: list[ClassProbability]
    model_version: str = Field(description="the first 12 hex digits of the checkpoint's "
                                           "SHA-256")
    latency_ms: float = Field(description="server-side time for this request")
    input: list[list[int]] | None = Field(
        None, description="with ?include_input=true: the H x W input the model saw (0-255; "
                          "null for colour models)")


class BatchPrediction(BaseModel):
    predictions: list[Prediction]
    model_version: str


def _binary(description: str) -> dict[str, Any]:
    return {"schema": {"type": "string", "format": "binary", "description": description}}


_IMAGE = "a PNG or JPEG file, any size: the model's preprocessing brings it to its input"
_PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary", "description": _IMAGE}}}},
    "image/png": _binary(_IMAGE),
    "image/jpeg": _binary(_IMAGE),
    "application/json": {"schema": {"type": "object", "properties": {
        "image": {"type": "string", "description": "the image file as base64 or a data URL"},
        "pixels": {"type": "array", "items": {"type": "array", "items": {"type": "number"}},
                   "description": "an H x W array in the model's size, 0-255 or 0-1"}}}},
}}}
_BATCH_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["files"],
        "properties": {"files": {"type": "array", "description": _IMAGE,
                                 "items": {"type": "string", "format": "binary"}}}}},
    "application/json": {"schema": {"type": "object", "required": ["images"], "properties": {
        "images": {"type": "array", "items": {"type": "string"},
                   "description": "the image files as base64 strings or data URLs"}}}},
}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "not an image, truncated, empty, or not valid JSON"},
    413: {"description": "body, pixels per image or per request, or number of images over "
                         "the limit"},
    415: {"description": "a content type not accepted"},
    422: {"description": "JSON fields of the wrong form"},
    503: {"description": "decoding did not finish within the time budget (or every decoder "
                         "stayed busy): retry later, or send a smaller image"},
}


def answer(state: ServiceState, probs: list[float], ms: float, x: np.ndarray) -> dict[str, Any]:
    """The response for one image; ``probs`` as the batcher returns them (rounded)."""
    model, version, top_k = state.model, state.version, state.settings.top_k
    classes = model.classes
    order = sorted(range(len(probs)), key=probs.__getitem__, reverse=True)
    label = classes[order[0]]
    pid = state.recent.add(label, version, classes, x)
    state.metrics.prediction(label)
    return {"prediction_id": pid, "label": label,
            "probabilities": dict(zip(classes, probs, strict=True)),
            "top_k": [{"label": classes[k], "probability": probs[k]} for k in order[:top_k]],
            "model_version": version, "latency_ms": round(ms, 3), **model.ood_answer(probs)}


async def predict_one(state: ServiceState, x: np.ndarray, t0: float, include_input: bool
                      ) -> bytes:
    """One image through the batcher, as the encoded JSON answer."""
    probs = await state.batcher.submit(x)
    out = answer(state, probs, (time.perf_counter() - t0) * 1000, x)
    if include_input:
        out["input"] = x[0].tolist() if state.model.input_spec.channels == 1 else None
    # plain JSON types: skip FastAPI's jsonable_encoder, and encode with orjson if present
    return dumps(out)


@router.post("/v1/predict", response_model=Prediction, openapi_extra=_PREDICT_BODY,
             responses=_ERRORS)
async def predict(request: Request, state: State, include_input: bool = False) -> Response:
    """Classify one image: multipart ``file``, a raw PNG or JPEG body, or JSON ``image``
    (base64) or ``pixels``."""
    t0 = time.perf_counter()
    (x,) = await images_from_request(request, state, batch=False)
    return Response(await predict_one(state, x, t0, include_input),
                    media_type="application/json")


@router.post("/v1/predict/batch", response_model=BatchPrediction, openapi_extra=_BATCH_BODY,
             responses=_ERRORS)
async def predict_batch(request: Request, state: State) -> Response:
    """Classify many images at once: multipart ``files`` or JSON ``images``."""
    t0 = time.perf_counter()
    xs = await images_from_request(request, state, batch=True)
    probs = await asyncio.get_running_loop().run_in_executor(None, state.run_batch, xs)
    ms = (time.perf_counter() - t0) * 1000
    return Response(dumps({"predictions": [answer(state, p, ms, x)
                                           for p, x in zip(probs, xs, strict=True)],
                           "model_version": state.version}), media_type="application/json")


async def predict_raw(state: ServiceState, scope: Any, receive: Any, send: Any) -> bool:
    """``POST /v1/predict`` with a raw image or JSON body as a plain ASGI handler: the same
    answers as the route, without the framework's routing, request object and dependency
    solving. Returns False when the client went away. ``receive`` is the guard's, which
    raises :class:`~cnnlab.serve.middleware.BodyTooLarge` at the body limit."""
    t0 = time.perf_counter()
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    query = scope.get("query_string", b"")
    include = bool(query) and parse_qs(query.decode("latin-1")).get(
        "include_input", [""])[-1] in ("1", "true")
    try:
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        (x,) = await images_from_body(state, content_type(scope), body, batch=False)
        status, payload = 200, await predict_one(state, x, t0, include)
    except ClientError as e:
        status, payload = e.status, error_body(e.kind, e.message)
    await send_json(send, status, payload)
    return True
