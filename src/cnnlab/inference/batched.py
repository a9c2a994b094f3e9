"""Batched inference on in-memory uint8 images: the one forward path that training's
validation, ``evaluate``, ``predict`` and the benchmarks share."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.transforms import normalize

__all__ = ["autocast_context", "evaluate_loss_accuracy", "predict_logits"]


def autocast_context(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU and on CUDA GPUs that support it, fp16 on older GPUs; no-op when off."""
    if not amp:
        return contextlib.nullcontext()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast(device.type, dtype=torch.bfloat16)


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
    amp: bool = False,
    channels_last: bool = False,
) -> torch.Tensor:
    """Logits (N, num_classes) as float32 on the CPU for uint8 ``images`` (N, C, H, W).

    The model is put in eval mode; its previous mode is restored afterwards.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(images), batch_size):
            x = normalize(images[start:start + batch_size].to(device, non_blocking=True), mean, std)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, amp):
                logits = model(x)
            out.append(logits.float().cpu())
    finally:
        model.train(was_training)
    if not out:
        return torch.empty(0, getattr(model, "num_classes", 0))
    return torch.cat(out)


def evaluate_loss_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (a fraction) of ``logits`` against ``targets``."""
    if len(targets) == 0:
        return float("nan"), float("nan")
    loss = F.cross_entropy(logits, targets).item()
    accuracy = (logits.argmax(1) == targets).float().mean().item()
    return loss, accuracy
