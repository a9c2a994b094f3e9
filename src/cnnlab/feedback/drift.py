"""Drift of the predicted classes: their shares against the training data's.

The service reports it in ``/metrics`` for every prediction it made; ``cnnlab feedback stats
--model`` for the predictions that got feedback.
"""

from __future__ import annotations

from typing import Any

__all__ = ["drift", "reference_shares"]


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
