"""The prediction service: FastAPI on uvicorn, micro-batched inference, Prometheus metrics.

Endpoints (JSON in and out; every error is ``{"error": {"type": ..., "message": ...}}``):

- ``POST /v1/predict``: one image as multipart (field ``file``), as a raw ``image/png`` or
  ``image/jpeg`` body, or as JSON ``{"image": "<base64>"}`` or ``{"pixels": [[...], ...]}``
  (an H x W array in the model's size, 0-255 or 0-1). Returns the label, every class's
  probability, the top k, the model version, the server-side latency and a ``prediction_id``;
  with ``?include_input=true`` also the input the model saw (H x W, 0-255).
- ``POST /v1/predict/batch``: many images (multipart ``files``, or JSON ``{"images": [...]}``
  of base64 strings).
- ``GET /v1/health``, ``GET /v1/model``, ``GET /metrics`` (Prometheus text format), and the
  OpenAPI docs at ``/docs``.

Concurrent requests are batched: requests that queue up while a batch runs form the next
batch (up to ``max_batch_size``), and with ``max_batch_delay_ms`` > 0 a request also waits
that long for others. Client mistakes get 400 (not an image,
truncated, no ink), 413 (body or pixel count over the limit), 415 (content type) or 422
(malformed JSON fields); 500 is left for real bugs.
"""



import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import torch
from fastapi import FastAPI, Request

from cnnlab.errors import CnnlabError

__all__ = ["ServeSettings", "create_app"]

try:
    from orjson import dumps as _dumps
except ImportError:  # orjson comes with cnnlab[serve]; the standard library does the same job
    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

LATENCY_BUCKETS_MS = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 1000)


@dataclass(frozen=True)
class ServeSettings:
    checkpoint: str = "default"
    engine: str = "auto"  # auto | torch | onnx
    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_batch_size: int = 32
    max_batch_delay_ms: float = 0.0  # 0: batch what queued while the last batch ran
    max_batch_images: int = 256  # images per /v1/predict/batch request
    # ONNX Runtime threads per batch (0: one per core). Batches run in the event loop, so a
    # second thread uses a core the loop cannot: 1.07x the requests per second of one on 2
    # cores (benchmarks/bench_serve.py); more threads pay little for batches of ~10 digits
    engine_threads: int = 2
    # run batches on a worker thread instead of in the event loop (for machines with cores
    # to spare; on 2 cores the event loop served more, benchmarks/bench_serve.py)
    inference_thread: bool = False
    top_k: int = 3
    remember: int = 10_000  # recent predictions kept for feedback
    feedback_url: str = "sqlite:///runs/serve/feedback.db"  # the feedback store


class ClientError(Exception):
    """A request the client must fix: ``status`` and an error ``type`` for the body."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


@dataclass
class _Metrics:
    requests: dict[tuple[str, int], int] = field(default_factory=dict)
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    latency_sum_ms: float = 0.0
    latency_n: int = 0
    predictions: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    batched_images: int = 0
    feedback_confirmed: int = 0
    feedback_corrected: int = 0
    reference: dict[str, float] = field(default_factory=dict)  # training class shares
    lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, path: str, status: int, ms: float) -> None:
        with self.lock:
            self.requests[(path, status)] = self.requests.get((path, status), 0) + 1
            i = next((k for k, b in enumerate(LATENCY_BUCKETS_MS) if ms <= b),
                     len(LATENCY_BUCKETS_MS))
            self.latency_counts[i] += 1
            self.latency_sum_ms += ms
            self.latency_n += 1

    def text(self, model_version: str) -> str:
        with self.lock:
            lines = ["# HELP cnnlab_requests_total HTTP requests by path and status.",
                     "# TYPE cnnlab_requests_total counter"]
            for (path, status), n in sorted(self.requests.items()):
                lines.append(f'cnnlab_requests_total{{path="{path}",status="{status}"}} {n}')
            errors = sum(n for (_, s), n in self.requests.items() if s >= 400)
            lines += ["# HELP cnnlab_errors_total Requests answered with a 4xx or 5xx status.",
                      "# TYPE cnnlab_errors_total counter", f"cnnlab_errors_total {errors}",
                      "# HELP cnnlab_request_latency_seconds Server-side request latency.",
                      "# TYPE cnnlab_request_latency_seconds histogram"]
            cumulative = 0
            for b, n in zip(LATENCY_BUCKETS_MS, self.latency_counts, strict=False):
                cumulative += n
                lines.append(f'cnnlab_request_latency_seconds_bucket{{le="{b / 1000:g}"}} '
                             f"{cumulative}")
            lines += [f'cnnlab_request_latency_seconds_bucket{{le="+Inf"}} {self.latency_n}',
                      f"cnnlab_request_latency_seconds_sum {self.latency_sum_ms / 1000:.6f}",
                      f"cnnlab_request_latency_seconds_count {self.latency_n}",
                      "# HELP cnnlab_predictions_total Predictions by predicted class.",
                      "# TYPE cnnlab_predictions_total counter"]
            for label, n in sorted(self.predictions.items()):
                lines.append(f'cnnlab_predictions_total{{label="{label}"}} {n}')
            lines += ["# HELP cnnlab_batches_total Inference batches run.",
                      "# TYPE cnnlab_batches_total counter", f"cnnlab_batches_total {self.batches}",
                      "# HELP cnnlab_batched_images_total Images run in those batches.",
                      "# TYPE cnnlab_batched_images_total counter",
                      f"cnnlab_batched_images_total {self.batched_images}",
                      "# HELP cnnlab_feedback_total Feedback received, by result.",
                      "# TYPE cnnlab_feedback_total counter",
                      f'cnnlab_feedback_total{{result="confirmed"}} {self.feedback_confirmed}',
                      f'cnnlab_feedback_total{{result="corrected"}} {self.feedback_corrected}',
                      "# HELP cnnlab_feedback_accuracy Share of feedback that confirmed the "
                      "prediction.",
                      "# TYPE cnnlab_feedback_accuracy gauge"]
            fb = self.feedback_confirmed + self.feedback_corrected
            if fb:
                lines.append(f"cnnlab_feedback_accuracy {self.feedback_confirmed / fb:.6f}")
            lines += ["# HELP cnnlab_prediction_drift Total variation distance between the "
                      "predicted classes' shares and the training data's (0 = same, 1 = "
                      "disjoint).",
                      "# TYPE cnnlab_prediction_drift gauge"]
            if sum(self.predictions.values()) and self.reference:
                lines.append("cnnlab_prediction_drift "
                             f"{drift(self.predictions, self.reference):.6f}")
            lines += ["# HELP cnnlab_model_info The model being served.",
                      "# TYPE cnnlab_model_info gauge",
                      f'cnnlab_model_info{{version="{model_version}"}} 1']
        return "\n".join(lines) + "\n"


class _Batcher:
    """Collects single images from concurrent requests and runs them as batches."""

    def __init__(self, run: Any, max_batch_size: int, max_delay_s: float,
                 in_thread: bool = False) -> None:
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
        assert self.queue is not None
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


def reference_shares(model: Any) -> dict[str, float]:
    """The training data's class shares: recorded at training, else uniform."""
    counts = model.metrics.get("train_class_counts")
    if isinstance(counts, dict) and sum(counts.values()) > 0:
        total = sum(counts.values())
        return {c: counts.get(c, 0) / total for c in model.classes}
    return {c: 1 / len(model.classes) for c in model.classes}


def drift(counts: dict[str, int], reference: dict[str, float]) -> float:
    """Total variation distance between ``counts`` (normalised) and ``reference`` shares."""
    total = sum(counts.values())
    if not total:
        return 0.0
    keys = set(counts) | set(reference)
    return 0.5 * sum(abs(counts.get(k, 0) / total - reference.get(k, 0.0)) for k in keys)


class _Guard:
    """Pure ASGI middleware (cheaper per request than Starlette's BaseHTTPMiddleware): refuses
    oversized bodies with 413, turns an unhandled exception into a JSON 500, and counts every
    request with its status and latency."""

    def __init__(self, app: Any, *, max_body: int, metrics: _Metrics,
                 raw: Any = None) -> None:
        self.app, self.max_body, self.metrics = app, max_body, metrics
        self.raw = raw  # a plain ASGI handler to guard instead of ``app``

    @staticmethod
    async def _json(send: Any, status: int, kind: str, message: str) -> None:
        body = json.dumps({"error": {"type": kind, "message": message}}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

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
            await self._json(send, 413, "payload_too_large",
                             f"the request body of {int(length):,} bytes exceeds the limit of "
                             f"{self.max_body:,} bytes")
            state["status"] = 413
        else:
            async def tracked(message: Any) -> None:
                if message["type"] == "http.response.start":
                    state["status"], state["started"] = message["status"], True
                await send(message)

            try:
                if self.raw is not None:
                    if not await self.raw(scope, receive, tracked):
                        state["status"] = 499  # the client closed the connection
                else:
                    await self.app(scope, receive, tracked)
            except Exception:  # a bug: report it as such, keep serving
                if state["started"]:
                    raise
                await self._json(send, 500, "internal_error",
                                 "internal error; see the server log")
                state["status"] = 500
        path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
        self.metrics.request(path, int(state["status"]), (time.perf_counter() - t0) * 1000)


class _Service(FastAPI):
    """FastAPI, with raw-image and JSON predictions handed to their plain ASGI handler (behind
    its own guard) before the framework's middleware stack and routing: the path most
    requests take skips both."""

    raw_guard: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (self.raw_guard is not None and scope["type"] == "http"
                and scope["path"] == "/v1/predict" and scope["method"] == "POST"
                and _content_type(scope) != "multipart/form-data"):
            await self.raw_guard(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _content_type(scope: Any) -> str:
    """The request's media type, lower case, without parameters."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.decode("latin-1").split(";")[0].strip().lower()
    return ""


def _version(path: str | None) -> str:
    if not path:
        return "unknown"
    h = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return h[:12]


def create_app(settings: ServeSettings | None = None) -> Any:
    """The FastAPI application serving ``settings.checkpoint``.

    Raises:
        CheckpointError: the checkpoint cannot be loaded.
    """
    from contextlib import asynccontextmanager

    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from cnnlab.api import load
    from cnnlab.data import read_image

    s = settings or ServeSettings()
    model = load(s.checkpoint, engine=s.engine, spinning=False, threads=s.engine_threads)
    version = _version(model.path)
    from cnnlab.serve.store import DuplicateFeedback, Feedback, FeedbackStore, png_bytes

    store = FeedbackStore(s.feedback_url)
    metrics = _Metrics(reference=reference_shares(model))
    for row in store.rows():
        if row.predicted == row.label:
            metrics.feedback_confirmed += 1
        else:
            metrics.feedback_corrected += 1
    recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
    recent_lock = threading.Lock()

    def run(images: list[np.ndarray]) -> list[list[float]]:
        with metrics.lock:
            metrics.batches += 1
            metrics.batched_images += len(images)
        from cnnlab.evaluate.inference import predict_logits

        current = model  # a reload may swap the model while this batch runs
        if current.onnx is not None:
            # numpy only: PyTorch's thread pool, woken by even a tiny softmax, spins for a
            # millisecond after each batch, which cost a whole core of a 2-core machine
            logits = current.onnx.logits_uint8(np.stack(images), batch_size=len(images))
            z = np.exp(logits - logits.max(axis=1, keepdims=True))
            return np.round(z / z.sum(axis=1, keepdims=True), 6).tolist()
        spec = current.input_spec
        logits = predict_logits(current.classifier, torch.from_numpy(np.stack(images)),
                                spec.mean, spec.std, batch_size=len(images))
        return torch.softmax(logits, dim=1).numpy().round(6).tolist()

    batcher = _Batcher(run, s.max_batch_size, s.max_batch_delay_ms / 1000,
                       in_thread=s.inference_thread)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        batcher.start()
        yield
        await batcher.stop()

    app = _Service(title="cnnlab", version=version, lifespan=lifespan,
                   description="Image classification with a cnnlab model.")
    app.state.model = model
    app.state.settings = s

    def error(status: int, kind: str, message: str) -> JSONResponse:
        return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)

    @app.exception_handler(ClientError)
    async def client_error(request: Request, exc: ClientError) -> JSONResponse:
        return error(exc.status, exc.kind, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return error(422, "validation_error", f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error(exc.status_code, kind, str(exc.detail))

    def decode(data: bytes, name: str) -> np.ndarray:
        if not data:
            raise ClientError(400, "bad_image", f"{name}: the image is empty (0 bytes)")
        if len(data) > s.max_body_bytes:
            raise ClientError(413, "payload_too_large",
                              f"{name}: {len(data):,} bytes exceed the limit of "
                              f"{s.max_body_bytes:,}")
        try:
            pil = read_image(data, name=name, max_pixels=s.max_pixels)
            return model.input_array(pil)
        except CnnlabError as e:
            too_big = "exceeds the limit" in str(e) or "decompression bomb" in str(e)
            status = 413 if too_big else 400
            raise ClientError(status, "payload_too_large" if status == 413 else "bad_image",
                              str(e)) from e

    def from_pixels(pixels: Any) -> np.ndarray:
        try:
            arr = np.asarray(pixels, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ClientError(422, "validation_error", "pixels must be a numeric H x W array"
                              ) from e
        if arr.ndim not in (2, 3) or not np.isfinite(arr).all():
            raise ClientError(422, "validation_error",
                              f"pixels must be a finite H x W (or C x H x W) array; got shape "
                              f"{arr.shape}")
        if arr.max(initial=0) > 1.0:
            arr = arr.clip(0, 255).astype(np.uint8)
        else:
            arr = arr.clip(0, 1).astype(np.float32)
        try:
            return model.input_array(arr)
        except CnnlabError as e:
            raise ClientError(422, "validation_error", str(e)) from e

    def from_base64(text: Any, name: str) -> np.ndarray:
        if not isinstance(text, str):
            raise ClientError(422, "validation_error", f"{name} must be a base64 string")
        if "," in text[:100] and text.startswith("data:"):
            text = text.split(",", 1)[1]  # a data URL from a browser
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ClientError(400, "bad_image", f"{name} is not valid base64") from e
        return decode(data, name)

    async def images_from(request: Request, batch: bool) -> list[np.ndarray]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "multipart/form-data":
            return images_from_body(ctype, await request.body(), batch)
        try:
            form = await request.form(max_files=s.max_batch_images, max_fields=10)
        except Exception as e:
            raise ClientError(400, "bad_request", f"unreadable multipart body: {e}") from e
        try:
            uploads = form.getlist("files" if batch else "file") or form.getlist("file")
            if not uploads:
                field_name = "files" if batch else "file"
                raise ClientError(422, "validation_error",
                                  f"multipart body has no '{field_name}' field with an image")
            out = []
            for up in uploads:
                if isinstance(up, str):
                    raise ClientError(422, "validation_error", "the file field must be a file")
                data = await up.read()
                out.append(decode(data, up.filename or "upload"))
            return out
        finally:
            await form.close()  # the spooled upload files

    def images_from_body(ctype: str, body: bytes, batch: bool) -> list[np.ndarray]:
        """The images of a raw image or JSON body (``ctype`` without parameters)."""
        if ctype in ("image/png", "image/jpeg") and not batch:
            return [decode(body, "body")]
        if ctype == "application/json":
            try:
                payload = json.loads(body)
            except ValueError as e:
                raise ClientError(400, "bad_request", f"the body is not valid JSON: {e}") from e
            if not isinstance(payload, dict):
                raise ClientError(422, "validation_error", "the JSON body must be an object")
            if batch:
                items = payload.get("images")
                if not isinstance(items, list) or not items:
                    raise ClientError(422, "validation_error",
                                      "images must be a non-empty list of base64 strings")
                if len(items) > s.max_batch_images:
                    raise ClientError(413, "payload_too_large",
                                      f"{len(items)} images exceed the limit of "
                                      f"{s.max_batch_images} per request")
                return [from_base64(t, f"images[{i}]") for i, t in enumerate(items)]
            if "image" in payload:
                return [from_base64(payload["image"], "image")]
            if "pixels" in payload:
                return [from_pixels(payload["pixels"])]
            raise ClientError(422, "validation_error",
                              "the JSON body needs 'image' (base64) or 'pixels' (an array)")
        allowed = ("multipart/form-data or application/json" if batch else
                   "multipart/form-data, image/png, image/jpeg or application/json")
        raise ClientError(415, "unsupported_media_type",
                          f"content type {ctype or '(none)'!r} is not accepted; send {allowed}")

    def answer(probs: list[float], ms: float, x: np.ndarray) -> dict[str, Any]:
        """The response for one image; ``probs`` as ``run`` returns them (rounded)."""
        order = sorted(range(len(probs)), key=probs.__getitem__, reverse=True)
        label = model.classes[order[0]]
        pid = os.urandom(16).hex()  # 128 random bits, as uuid4 but without building a UUID
        with recent_lock:
            recent[pid] = {"label": label, "time": time.time(), "model_version": version,
                           "input": x}
            while len(recent) > s.remember:
                recent.popitem(last=False)
        with metrics.lock:
            metrics.predictions[label] = metrics.predictions.get(label, 0) + 1
        return {"prediction_id": pid, "label": label,
                "probabilities": dict(zip(model.classes, probs, strict=True)),
                "top_k": [{"label": model.classes[k], "probability": probs[k]}
                          for k in order[:s.top_k]],
                "model_version": version, "latency_ms": round(ms, 3)}

    async def predict_one(x: np.ndarray, t0: float, include_input: bool) -> bytes:
        probs = await batcher.submit(x)
        out = answer(probs, (time.perf_counter() - t0) * 1000, x)
        if include_input:
            out["input"] = x[0].tolist() if model.input_spec.channels == 1 else None
        # plain JSON types: skip FastAPI's jsonable_encoder, and encode with orjson if present
        return _dumps(out)

    @app.post("/v1/predict")
    async def predict(request: Request) -> Response:
        t0 = time.perf_counter()
        (x,) = await images_from(request, batch=False)
        include = request.query_params.get("include_input") in ("1", "true")
        return Response(await predict_one(x, t0, include), media_type="application/json")

    async def predict_raw(scope: Any, receive: Any, send: Any) -> bool:
        """``POST /v1/predict`` with a raw image or JSON body as a plain ASGI handler: the same
        answers as the route above (which serves multipart bodies and the OpenAPI docs),
        without the framework's routing, request object and dependency solving on the path
        most requests take. Returns False when the client went away."""
        t0 = time.perf_counter()
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return False
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > s.max_body_bytes:  # a body sent without a content-length
                await _Guard._json(send, 413, "payload_too_large",
                                   f"the request body exceeds the limit of "
                                   f"{s.max_body_bytes:,} bytes")
                return True
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        query = scope.get("query_string", b"")
        include = bool(query) and parse_qs(query.decode("latin-1")).get(
            "include_input", [""])[-1] in ("1", "true")
        try:
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            (x,) = images_from_body(_content_type(scope), body, batch=False)
            status, payload = 200, await predict_one(x, t0, include)
        except ClientError as e:
            status, payload = e.status, _dumps({"error": {"type": e.kind,
                                                          "message": e.message}})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
        return True

    @app.post("/v1/predict/batch")
    async def predict_batch(request: Request) -> dict[str, Any]:
        t0 = time.perf_counter()
        xs = await images_from(request, batch=True)
        probs = await asyncio.get_running_loop().run_in_executor(None, run, xs)
        ms = (time.perf_counter() - t0) * 1000
        return {"predictions": [answer(p, ms, x) for p, x in zip(probs, xs, strict=True)],
                "model_version": version}

    @app.post("/v1/feedback", status_code=201)
    async def feedback(request: Request) -> dict[str, Any]:
        try:
            payload = await request.json()
        except ValueError as e:
            raise ClientError(400, "bad_request", f"the body is not valid JSON: {e}") from e
        if not isinstance(payload, dict) or not isinstance(payload.get("prediction_id"), str) \
                or not isinstance(payload.get("label"), str):
            raise ClientError(422, "validation_error",
                              "the body needs 'prediction_id' and 'label' as strings")
        pid, label = payload["prediction_id"], payload["label"]
        if label not in model.classes:
            raise ClientError(422, "validation_error",
                              f"label {label!r} is not one of the model's classes "
                              f"{model.classes}")
        with recent_lock:
            pred = recent.get(pid)
        if pred is None:
            raise ClientError(404, "not_found",
                              f"no recent prediction has id {pid!r} (feedback is taken for the "
                              f"last {s.remember:,} predictions of this service)")
        fb = Feedback(prediction_id=pid, predicted=pred["label"], label=label,
                      model_version=pred["model_version"], created=time.time(),
                      image_png=png_bytes(pred["input"]))
        try:
            await asyncio.get_running_loop().run_in_executor(None, store.add, fb)
        except DuplicateFeedback as e:
            raise ClientError(409, "duplicate", str(e)) from e
        with metrics.lock:
            if fb.predicted == fb.label:
                metrics.feedback_confirmed += 1
            else:
                metrics.feedback_corrected += 1
        return {"stored": True, "prediction_id": pid, "predicted": fb.predicted,
                "label": label, "model_version": fb.model_version}

    @app.post("/v1/admin/reload")
    async def reload(request: Request) -> dict[str, Any]:
        """Swap in another model without downtime: the registry's current (promoted) version,
        or ``{"path": ...}``. Needs ``Authorization: Bearer $CNNLAB_ADMIN_TOKEN``."""
        nonlocal model, version
        token = os.environ.get("CNNLAB_ADMIN_TOKEN")
        if not token:
            raise ClientError(403, "forbidden", "admin endpoints are off: start the service "
                              "with CNNLAB_ADMIN_TOKEN set")
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise ClientError(401, "unauthorized", "missing or wrong admin token (send "
                              "Authorization: Bearer <CNNLAB_ADMIN_TOKEN>)")
        body = await request.body()
        path = None
        if body:
            try:
                payload = json.loads(body)
            except ValueError as e:
                raise ClientError(400, "bad_request", f"the body is not valid JSON: {e}") from e
            path = payload.get("path") if isinstance(payload, dict) else None
        if path is None:
            from cnnlab.serve.retrain import current_model

            entry = current_model(store)
            if entry is None:
                raise ClientError(404, "not_found", "the model registry has no promoted "
                                  "model; run `cnnlab retrain` first or send {\"path\": ...}")
            path = entry["path"]
        try:
            new = await asyncio.get_running_loop().run_in_executor(
                None, lambda: load(path, engine=s.engine, spinning=False,
                                   threads=s.engine_threads))
        except CnnlabError as e:
            raise ClientError(422, "bad_model", str(e)) from e
        model, version = new, _version(new.path)  # requests from now on use the new model
        metrics.reference = reference_shares(new)
        return {"reloaded": True, "model_version": version, "path": new.path}

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model_version": version}

    @app.get("/v1/model")
    async def model_info() -> dict[str, Any]:
        spec = model.input_spec
        m = {k: v for k, v in model.metrics.items() if isinstance(v, int | float | str)
             and not (isinstance(v, float) and math.isnan(v))}
        return {"version": version, "path": model.path, "engine": model.engine,
                "name": model.config.get("model", {}).get("name"),
                "recipe": model.config.get("recipe"), "classes": model.classes,
                "input": {"channels": spec.channels, "height": spec.height,
                          "width": spec.width},
                "preprocessing": model.preprocessing, "metrics": m}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.text(version),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        page = Path(__file__).with_name("index.html")
        if page.is_file():
            return HTMLResponse(page.read_text())
        return HTMLResponse("<!DOCTYPE html><title>cnnlab</title><p>cnnlab prediction service: "
                            "see <a href=\"/docs\">/docs</a>.</p>")

    app.add_middleware(_Guard, max_body=s.max_body_bytes, metrics=metrics)
    app.raw_guard = _Guard(None, max_body=s.max_body_bytes, metrics=metrics, raw=predict_raw)
    app.state.recent = recent
    app.state.store = store
    return app


KNOWN_PATHS = {"/v1/predict", "/v1/predict/batch", "/v1/feedback", "/v1/admin/reload",
               "/v1/health", "/v1/model", "/metrics", "/"}
