"""Benchmark the training recipes on real MNIST; prints one JSON object.

Measured in one run, so the figures can be compared on a shared, noisy machine:
- the machine's fp32 matmul peak (median GFLOP/s of a 2048x2048 matmul),
- the reference: one epoch of the classic pytorch/examples MNIST CNN (Adadelta, batch 64),
- each recipe over several seeds: test accuracy (mean, min, max), training wall time
  (data loading and validation excluded), images/s, and that throughput as a fraction of the
  matmul peak (3 x forward MACs x 2 FLOP per image: forward plus backward).

    python benchmarks/bench_recipes.py                       # fast recipe, 5 seeds + reference
    python benchmarks/bench_recipes.py --recipes default --seeds 3 --no-reference
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import matmul_peak_gflops  # noqa: E402
from cnnlab.config import resolve_config  # noqa: E402
from cnnlab.models.summary import summarize  # noqa: E402
from cnnlab.training.data import prepare_data  # noqa: E402
from cnnlab.training.loop import build_model, fit  # noqa: E402


class ExamplesNet(nn.Module):
    """pytorch/examples mnist/main.py, as published (1.2 M parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = self.dropout1(x).flatten(1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return self.fc2(x)


def reference_epoch(data_dir: str) -> dict:
    """One epoch of the pytorch/examples CNN over the full 60k training set, then test."""
    from cnnlab.data import load_dataset

    train = load_dataset("mnist", "train", data_dir=data_dir, progress=False)
    test = load_dataset("mnist", "test", data_dir=data_dir, progress=False)
    norm = lambda x: (x.float() / 255 - 0.1307) / 0.3081  # noqa: E731
    torch.manual_seed(1)
    model = ExamplesNet()
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    perm = torch.randperm(len(train))
    t0 = time.perf_counter()
    model.train()
    for i in range(0, len(train), 64):
        idx = perm[i:i + 64]
        loss = F.nll_loss(F.log_softmax(model(norm(train.images[idx])), 1), train.targets[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.inference_mode():
        preds = torch.cat([model(norm(test.images[i:i + 1000])).argmax(1)
                           for i in range(0, len(test), 1000)])
    return {"epoch_time_s": round(seconds, 2), "images_per_s": round(len(train) / seconds, 1),
            "test_accuracy": round((preds == test.targets).float().mean().item(), 4)}


def bench_recipe(recipe: str, seeds: list[int], data_dir: str, peak: float) -> dict:
    runs = []
    data = None
    for seed in seeds:
        cfg = resolve_config({"data": {"data_dir": data_dir},
                              "train": {"seed": seed, "device": "cpu"}}, recipe=recipe)
        if data is None or cfg.data.val_fraction > 0:  # the split depends on the seed
            data = prepare_data(cfg.data, seed=seed, progress=False)
        result = fit(cfg, progress=False, data=data)
        m = result.metrics
        runs.append({"seed": seed, "test_accuracy": m["test_accuracy"],
                     "train_time_s": m["train_time_s"], "images_per_s": m["images_per_s"],
                     "epochs": m["epochs_run"]})
        print(f"{recipe} seed {seed}: {runs[-1]}", file=sys.stderr)
    macs = summarize(build_model(cfg, data), None).total_macs
    accs = [r["test_accuracy"] for r in runs]
    times = [r["train_time_s"] for r in runs]
    ips = statistics.median(r["images_per_s"] for r in runs)
    return {
        "recipe": recipe, "model": cfg.model.name, "forward_macs": macs, "runs": runs,
        "test_accuracy_mean": round(statistics.mean(accs), 5),
        "test_accuracy_min": min(accs), "test_accuracy_max": max(accs),
        "test_accuracy_std": round(statistics.stdev(accs), 5) if len(accs) > 1 else 0.0,
        "train_time_s_median": round(statistics.median(times), 2),
        "train_time_s_max": round(max(times), 2),
        "images_per_s_median": ips,
        "fraction_of_matmul_peak": round(ips * macs * 2 * 3 / (peak * 1e9), 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default="fast", help="comma-separated (default: fast)")
    p.add_argument("--seeds", type=int, default=5, help="seeds per recipe (default: 5)")
    p.add_argument("--data-dir", default=str(ROOT / "data"))
    p.add_argument("--no-reference", action="store_true", help="skip the reference epoch")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_peak_gflops()
    out = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
        "matmul_peak_gflops": round(peak, 1),
    }
    if not args.no_reference:
        out["reference_pytorch_examples_one_epoch"] = reference_epoch(args.data_dir)
        print(f"reference: {out['reference_pytorch_examples_one_epoch']}", file=sys.stderr)
    out["recipes"] = [bench_recipe(r, list(range(args.seeds)), args.data_dir, peak)
                      for r in args.recipes.split(",")]
    out["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
