"""Drift of the predicted classes: their shares against the training data's.

The service reports it in ``/metrics`` for every prediction it made and, beside that
cumulative figure, for its last predictions only (:class:`RecentLabels`, a sliding window),
where a recent shift shows even after a long normal history; ``cnnlab feedback stats
--model`` reports it for the predictions that got feedback.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["RecentLabels", "drift", "reference_shares"]


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


class RecentLabels:
    """Counts of the last ``size`` labels added (a sliding window), updated in O(1) per
    label. Not thread-safe: the caller holds its lock."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"the drift window must hold at least 1 label; got {size}")
        self.size = size
        self.labels: deque[str] = deque()
        self.counts: dict[str, int] = {}

    def add(self, label: str) -> None:
        self.labels.append(label)
        self.counts[label] = self.counts.get(label, 0) + 1
        if len(self.labels) > self.size:
            old = self.labels.popleft()
            self.counts[old] -= 1
            if not self.counts[old]:
                del self.counts[old]

    def __len__(self) -> int:
        return len(self.labels)
