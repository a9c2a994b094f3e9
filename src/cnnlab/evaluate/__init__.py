"""Evaluation: metrics, inference timing and the shared batched inference path."""

from cnnlab.evaluate.inference import evaluate_loss_accuracy, predict_logits
from cnnlab.evaluate.metrics import (
    UndefinedMetricWarning,
    accuracy,
    classification_report,
    confusion_matrix,
)
from cnnlab.evaluate.timing import measure_inference

__all__ = [
    "UndefinedMetricWarning",
    "accuracy",
    "classification_report",
    "confusion_matrix",
    "evaluate_loss_accuracy",
    "measure_inference",
    "predict_logits",
]
