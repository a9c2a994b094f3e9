"""Confidence scores for every prediction and the out-of-distribution (``ood``) flag.

- ``confidence``: the largest class probability (max softmax, Hendrycks & Gimpel 2017);
- ``energy``: ``-logsumexp(logits)`` (Liu et al. 2020); lower means more like the training
  data;
- ``ood``: ``confidence`` below a threshold chosen on validation data, so that a known share
  (``rate``, 1 % by default) of the validation digits is flagged.

The flag is on ``confidence`` because the service's batcher passes on probabilities, not
logits. The threshold is found, in this order, in the checkpoint's ``metrics["ood"]`` and in
``ood.json`` beside the checkpoint (written by ``cnnlab robustness RUN``, which computes it
from the run's validation split; it names the checkpoint's SHA-256 and is ignored for any
other file). A model with neither has ``ood`` None: run ``cnnlab robustness RUN --suite ood``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OOD_FILE", "OodThreshold", "confidence_energy", "read_ood_threshold"]

OOD_FILE = "ood.json"


@dataclass(frozen=True)
class OodThreshold:
    """The ``ood`` flag's rule: ``score < threshold`` is out of distribution."""

    threshold: float
    score: str = "confidence"  # the only score the flag uses (see the module docstring)
    rate: float = 0.01  # the share of validation digits below the threshold
    source: str = ""  # where it came from: checkpoint metrics, or the ood.json file

    def flag(self, confidence: float) -> bool:
        return bool(confidence < self.threshold)


def confidence_energy(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence, energy)`` per row of float logits ``(N, K)``: the max softmax and
    ``-logsumexp``. Two reductions over K numbers: a few microseconds a prediction."""
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(axis=1)
    lse = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
    return np.exp(top - lse), -lse


def _parse(d: Any, source: str) -> OodThreshold | None:
    if not isinstance(d, dict):
        return None
    try:
        threshold = float(d["threshold"])
    except (KeyError, TypeError, ValueError):
        return None
    if not math.isfinite(threshold) or d.get("score", "confidence") != "confidence":
        return None
    return OodThreshold(threshold, "confidence", float(d.get("rate", 0.01)), source)


def read_ood_threshold(checkpoint: str | Path | None, metrics: dict[str, Any] | None = None
                       ) -> OodThreshold | None:
    """The checkpoint's ``ood`` threshold (see the module docstring), or None."""
    found = _parse((metrics or {}).get("ood"), "checkpoint metrics")
    if found is not None or not checkpoint:
        return found
    path = Path(checkpoint)
    sidecar = path.parent / OOD_FILE
    if not sidecar.is_file():
        return None
    try:
        d = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    from cnnlab.inference.checkpoint import checkpoint_sha256

    try:
        if not isinstance(d, dict) or d.get("checkpoint_sha256") != checkpoint_sha256(path):
            return None  # made for another version of the model
    except OSError:
        return None
    return _parse(d, str(sidecar))
