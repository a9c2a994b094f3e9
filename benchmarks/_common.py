"""Shared by the benchmarks: the machine a figure came from, and the transfer-learning data."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> dict[str, object]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


def digits_and_mnist_model(work: Path, data_dir: str) -> tuple[Path, Path]:
    """scikit-learn's digits exported to ``work/sklearn-digits``, and the ``fast`` recipe's
    MNIST model in ``work/mnist-fast`` (each made once, reused after)."""
    from cnnlab.config import resolve_config
    from cnnlab.data.export import export_dataset
    from cnnlab.training.loop import fit

    folder = work / "sklearn-digits"
    if not folder.is_dir():
        export_dataset("sklearn-digits", folder, progress=False)
    mnist = work / "mnist-fast"
    if not (mnist / "model.pt").is_file():
        fit(resolve_config({"data": {"data_dir": data_dir}}, recipe="fast"),
            out_dir=mnist, overwrite=True, progress=False)
    return folder, mnist


def matmul_peak_gflops(n: int = 2048, repeats: int = 7) -> float:
    """The machine's fp32 matmul rate at the current torch thread count: the median GFLOP/s of
    ``repeats`` ``n x n`` products (after one warm-up)."""
    import statistics
    import time

    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)
