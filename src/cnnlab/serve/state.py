"""The service's settings and its one state object.

:class:`ServiceState` holds everything a request may need - the model and its version, the
settings, the batcher, the image decoders, the feedback store, the metrics and the recent
predictions - and lives on ``app.state.service``. Every handler reads the model from it at
the time it runs, so an admin reload (:meth:`ServiceState.use_model`) reaches every part of
the app at once.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data.folders import REDUCE_ABOVE_PIXELS
from cnnlab.feedback.drift import RecentLabels, reference_shares
from cnnlab.feedback.store import FeedbackStore
from cnnlab.serve.batching import Batcher, probabilities
from cnnlab.serve.metrics import Metrics
from cnnlab.serve.pool import DecodePool

__all__ = ["RecentPredictions", "ServeSettings", "ServiceState", "load_for_serving",
           "model_version"]


@dataclass(frozen=True)
class ServeSettings:
    """How the service runs (``cnnlab serve``'s flags fill it)."""

    checkpoint: str = "default"  # a run directory, a checkpoint file, or `default`
    engine: str = "auto"  # auto | torch | onnx | int8
    max_body_bytes: int = 10 * 1024 * 1024  # per request, counted as it is read
    max_pixels: int = 40_000_000  # per image, from its header: more is a 413
    max_request_pixels: int = 64_000_000  # all images of one request together
    # images over this many pixels are shrunk by an integer factor while decoded, before
    # any float conversion: a 6300x6300 PNG took 4.5 s and 1.9 GB unshrunk, 0.4 s and 0.3 GB
    # shrunk (benchmarks/bench_serve.py --hostile); the same threshold as every other reader,
    # so the service sees a file as `predict` does
    reduce_above_pixels: int = REDUCE_ABOVE_PIXELS
    decode_workers: int = 2  # threads decoding large images; at most this many at once
    decode_timeout_s: float = 5.0  # a request's decoding, waiting for a worker included
    # requests with fewer pixels in all are decoded in the event loop (a thread hand-off
    # costs more than decoding a 28x28 digit); larger ones on the decode workers
    inline_decode_pixels: int = 65_536
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
    remember: int = 10_000  # recent predictions kept for feedback ...
    remember_bytes: int = 64 * 1024 * 1024  # ... and at most this many bytes of their inputs
    drift_window: int = 1000  # the recent predictions the sliding drift figure covers
    feedback_url: str = "sqlite:///runs/serve/feedback.db"  # the feedback store
    # POST /v1/admin/reload may name a checkpoint path (not only a registry version)
    allow_reload_path: bool = False


class RecentPredictions:
    """The last ``capacity`` predictions by id (what feedback refers to), their inputs
    taking at most ``max_bytes`` in all (the oldest go first); thread-safe.

    Inputs are the model's uint8 inputs: 784 bytes for a 28x28 digit, 150 kB for 3x224x224,
    so the byte bound is the one that holds for large models (64 MB: 426 of those)."""

    def __init__(self, capacity: int, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.capacity, self.max_bytes = capacity, max_bytes
        self.nbytes = 0
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, label: str, model_version: str, classes: list[str], x: np.ndarray) -> str:
        """Remember one prediction; returns its new id (128 random bits, as uuid4 but
        without building a UUID)."""
        pid = os.urandom(16).hex()
        if isinstance(x.base, np.ndarray) and x.base.nbytes > x.nbytes:
            x = x.copy()  # a view would keep its whole base alive, uncounted
        with self._lock:
            self._items[pid] = {"label": label, "time": time.time(),
                                "model_version": model_version, "classes": classes,
                                "input": x}
            self.nbytes += x.nbytes
            while self._items and (len(self._items) > self.capacity
                                   or self.nbytes > self.max_bytes):
                _, old = self._items.popitem(last=False)
                self.nbytes -= old["input"].nbytes
        return pid

    def get(self, pid: str) -> dict[str, Any] | None:
        with self._lock:
            return self._items.get(pid)


def model_version(path: str | None) -> str:
    """A model's version: the first 12 hex digits of its checkpoint file's SHA-256."""
    if not path:
        return "unknown"
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


@dataclass
class ServiceState:
    """Everything the endpoints share; see the module docstring."""

    settings: ServeSettings
    model: Any  # a cnnlab Model
    version: str
    store: FeedbackStore
    metrics: Metrics
    recent: RecentPredictions
    batcher: Batcher = field(init=False)
    decoder: DecodePool = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.batcher = Batcher(self.run_batch, s.max_batch_size, s.max_batch_delay_ms / 1000,
                               in_thread=s.inference_thread)
        self.decoder = DecodePool(s.decode_workers, s.decode_timeout_s)

    @classmethod
    def open(cls, settings: ServeSettings) -> ServiceState:
        """Load the model, open the feedback store and count the feedback it holds.

        Raises:
            CheckpointError: the checkpoint cannot be loaded.
            ConfigError: the feedback store cannot be opened.
        """
        model = load_for_serving(settings.checkpoint, settings)
        store = FeedbackStore(settings.feedback_url)
        metrics = Metrics(reference=reference_shares(model),
                          recent_predictions=RecentLabels(settings.drift_window))
        for row in store.rows():
            metrics.feedback(confirmed=row.predicted == row.label)
        return cls(settings=settings, model=model, version=model_version(model.path),
                   store=store, metrics=metrics,
                   recent=RecentPredictions(settings.remember, settings.remember_bytes))

    def run_batch(self, images: list[np.ndarray]) -> list[list[float]]:
        """Class probabilities for a batch, from the model being served now."""
        self.metrics.batch(len(images))
        return probabilities(self.model, images)

    def use_model(self, model: Any) -> None:
        """Serve ``model`` from the next request on (batches already running finish on the
        model they started with)."""
        self.model, self.version = model, model_version(model.path)
        self.metrics.reference = reference_shares(model)


def load_for_serving(path: str, settings: ServeSettings) -> Any:
    """The model at ``path`` on the settings' engine, its idle ONNX Runtime threads sleeping.

    Raises:
        CheckpointError: the checkpoint cannot be loaded.
    """
    from cnnlab.api import load

    return load(path, engine=settings.engine, spinning=False, threads=settings.engine_threads)
