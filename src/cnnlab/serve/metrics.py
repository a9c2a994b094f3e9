"""The service's Prometheus metrics: requests by path and status, errors, a latency histogram,
predictions per class, batches, feedback and the drift of the predicted classes."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from cnnlab.feedback.drift import RecentLabels, drift

__all__ = ["KNOWN_PATHS", "LATENCY_BUCKETS_MS", "Metrics"]

LATENCY_BUCKETS_MS = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 1000)
# paths counted under their own label; every other path is "other", so that clients probing
# random URLs cannot grow the metrics without bound
KNOWN_PATHS = frozenset({"/v1/predict", "/v1/predict/batch", "/v1/feedback", "/v1/admin/reload",
                         "/v1/health", "/v1/model", "/metrics", "/"})


@dataclass
class Metrics:
    """Counters shared by the event loop and the inference thread (hence the lock)."""

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
    # the last predictions' labels, for the sliding-window drift beside the cumulative one
    recent_predictions: RecentLabels = field(default_factory=lambda: RecentLabels(1000))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, path: str, status: int, ms: float) -> None:
        path = path if path in KNOWN_PATHS else "other"
        with self.lock:
            self.requests[(path, status)] = self.requests.get((path, status), 0) + 1
            i = next((k for k, b in enumerate(LATENCY_BUCKETS_MS) if ms <= b),
                     len(LATENCY_BUCKETS_MS))
            self.latency_counts[i] += 1
            self.latency_sum_ms += ms
            self.latency_n += 1

    def prediction(self, label: str) -> None:
        with self.lock:
            self.predictions[label] = self.predictions.get(label, 0) + 1
            self.recent_predictions.add(label)

    def batch(self, size: int) -> None:
        with self.lock:
            self.batches += 1
            self.batched_images += size

    def feedback(self, confirmed: bool) -> None:
        with self.lock:
            if confirmed:
                self.feedback_confirmed += 1
            else:
                self.feedback_corrected += 1

    def text(self, model_version: str) -> str:
        """All metrics in Prometheus' text format."""
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
            window = self.recent_predictions
            lines += [f"# HELP cnnlab_prediction_drift_recent The same distance for the last "
                      f"{window.size} predictions only (a sliding window: a recent shift shows "
                      "here first).",
                      "# TYPE cnnlab_prediction_drift_recent gauge"]
            if len(window) and self.reference:
                lines.append("cnnlab_prediction_drift_recent "
                             f"{drift(window.counts, self.reference):.6f}")
            lines += ["# HELP cnnlab_model_info The model being served.",
                      "# TYPE cnnlab_model_info gauge",
                      f'cnnlab_model_info{{version="{model_version}"}} 1']
        return "\n".join(lines) + "\n"
