"""Evaluation: metrics, inference timing and the shared batched inference path."""

from cnnlab.evaluate.metrics import (
    UndefinedMetricWarning,
    accuracy,
    balanced_accuracy,
    bootstrap_ci,
    classification_report,
    confusion_matrix,
    expected_calibration_error,
    log_loss,
    mcnemar,
    normalized_confusion_matrix,
    roc_auc,
    roc_curves,
    top_k_accuracy,
)
from cnnlab.evaluate.timing import measure_inference
from cnnlab.inference.batched import evaluate_loss_accuracy, predict_logits

__all__ = [
    "UndefinedMetricWarning",
    "accuracy",
    "balanced_accuracy",
    "bootstrap_ci",
    "classification_report",
    "confusion_matrix",
    "evaluate_loss_accuracy",
    "expected_calibration_error",
    "log_loss",
    "mcnemar",
    "measure_inference",
    "normalized_confusion_matrix",
    "predict_logits",
    "roc_auc",
    "roc_curves",
    "top_k_accuracy",
]
