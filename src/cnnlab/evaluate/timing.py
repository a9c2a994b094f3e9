"""Inference timing: batch-1 latency percentiles and large-batch throughput (median of runs)."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

__all__ = ["measure_inference"]


@torch.inference_mode()
def measure_inference(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    *,
    device: torch.device | str = "cpu",
    latency_runs: int = 200,
    batch_size: int = 1000,
    throughput_runs: int = 5,
    warmup: int = 10,
) -> dict[str, float]:
    """Batch-1 latency (p50/p95/p99, ms) and throughput (images/s) at ``batch_size``.

    Inputs are random normalised tensors: timing does not depend on the pixel values.
    """
    device = torch.device(device)
    model = model.eval()
    one = torch.randn(1, *input_shape, device=device)
    big = torch.randn(batch_size, *input_shape, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        model(one)
    sync()
    times = []
    for _ in range(latency_runs):
        t0 = time.perf_counter()
        model(one)
        sync()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()

    def pct(q: float) -> float:
        return times[min(len(times) - 1, round(q * (len(times) - 1)))]

    model(big)
    sync()
    rates = []
    for _ in range(throughput_runs):
        t0 = time.perf_counter()
        model(big)
        sync()
        rates.append(batch_size / (time.perf_counter() - t0))
    return {"latency_ms_p50": round(pct(0.50), 4), "latency_ms_p95": round(pct(0.95), 4),
            "latency_ms_p99": round(pct(0.99), 4),
            "throughput_images_per_s": round(statistics.median(rates), 1),
            "throughput_batch_size": batch_size}
