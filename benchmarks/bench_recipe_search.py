"""A recorded search for a recipe (`fast`, `default` or `vit`), decided on validation; prints JSON.

Each candidate is the recipe with a few settings changed. For `fast`: fewer FLOPs per image (a
narrower net, fewer images per epoch; a larger batch with a higher one-cycle peak). For
`default`: a longer schedule within the 15 minutes its target allows, and (round 2) elastic
distortion. For `vit`: the stem, the heads and the learning rate, on a shortened schedule
(``--epochs``): its 36 epochs are most of the 45 minutes its target allows. Every candidate trains
on the same 55,000 images and is scored on the 5,000 held-out validation images (stratified,
seeded): the test split is not read. Candidates are run interleaved, seed by seed, so a noisy
neighbour slows them alike, and each one's training time is also given as a ratio to the
unchanged recipe's time in the same seed round.

Reported per candidate: validation accuracy (mean, min, max over seeds), training time
(median), time relative to the baseline, forward MACs per image, training FLOPs per image
(3 x forward MACs x 2), and throughput as a fraction of the machine's matmul peak measured
at the start with the same thread count.

    python benchmarks/bench_recipe_search.py --seeds 2 --out benchmarks/results/fast_search.json
    python benchmarks/bench_recipe_search.py --recipe default --seeds 1 --threads 2 \
        --out benchmarks/results/default_search.json
    python benchmarks/bench_recipe_search.py --recipe vit --epochs 6 --seeds 1 --threads 1 \
        --out benchmarks/results/vit_search.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import matmul_peak_gflops  # noqa: E402
from cnnlab.config import resolve_config  # noqa: E402
from cnnlab.models.summary import summarize  # noqa: E402
from cnnlab.training.data import prepare_data  # noqa: E402
from cnnlab.training.loop import build_model, fit  # noqa: E402

# name -> overrides of the `fast` recipe (nested like a config file)
FAST_CANDIDATES: dict[str, dict[str, Any]] = {
    "fast (as shipped)": {},
    "widths 12/24/48": {"model": {"widths": [12, 24, 48]}},
    "widths 8/16/32": {"model": {"widths": [8, 16, 32]}},
    "batch 256, lr 8e-3": {"train": {"batch_size": 256}, "optim": {"lr": 8e-3}},
    "40k images": {"data": {"limit": 40_000}},
    "widths 12/24/48, batch 256, lr 8e-3": {"model": {"widths": [12, 24, 48]},
                                            "train": {"batch_size": 256},
                                            "optim": {"lr": 8e-3}},
    "batch 512, lr 1.2e-2": {"train": {"batch_size": 512}, "optim": {"lr": 1.2e-2}},
    # pool before BN and ReLU: the same weights and convs, a quarter of the BN/ReLU pixels
    "pool first": {"model": {"pool_first": True}},
    "pool first, batch 256, lr 8e-3": {"model": {"pool_first": True},
                                       "train": {"batch_size": 256}, "optim": {"lr": 8e-3}},
    "pool first, batch 512, lr 1.2e-2": {"model": {"pool_first": True},
                                         "train": {"batch_size": 512}, "optim": {"lr": 1.2e-2}},
    "pool first, batch 256, lr 8e-3, 45k images": {"model": {"pool_first": True},
                                                   "train": {"batch_size": 256},
                                                   "optim": {"lr": 8e-3},
                                                   "data": {"limit": 45_000}},
    # second round, from the pool-first recipe: fewer images, and a narrower last stage
    # (channels kept multiples of 16: 12/24/48 ran slower than 16/32/64 in the first round)
    "pool first, 45k images": {"model": {"pool_first": True}, "data": {"limit": 45_000}},
    "pool first, 50k images": {"model": {"pool_first": True}, "data": {"limit": 50_000}},
    "pool first, widths 16/32/48": {"model": {"pool_first": True, "widths": [16, 32, 48]}},
    "pool first, widths 16/32/32": {"model": {"pool_first": True, "widths": [16, 32, 32]}},
    "pool first, widths 16/32/48, 45k images": {"model": {"pool_first": True,
                                                          "widths": [16, 32, 48]},
                                                "data": {"limit": 45_000}},
    # third round, from the shipped recipe (pool first, 45k images): the convs look at the
    # centred square of the image only (model.crop), fewer pixels in every layer; with the time
    # saved, more images
    "crop 24": {"model": {"crop": 24}},
    "crop 22": {"model": {"crop": 22}},
    "crop 20": {"model": {"crop": 20}},
    "crop 24, 50k images": {"model": {"crop": 24}, "data": {"limit": 50_000}},
    "crop 20, 55k images": {"model": {"crop": 20}, "data": {"limit": 55_000}},
    # fourth round: the two crops nearest the line, with the images traded against the pixels
    "crop 24, 40k images": {"model": {"crop": 24}, "data": {"limit": 40_000}},
    "crop 22, 50k images": {"model": {"crop": 22}, "data": {"limit": 50_000}},
    "crop 22, 55k images": {"model": {"crop": 22}, "data": {"limit": 55_000}},
}
# name -> overrides of the `default` recipe: its 20 epochs took 7.9 minutes on 55,000 images on
# the 2-core machine, so 30 epochs on all 60,000 (about 13 minutes) fit the 15-minute budget and
# 40 (about 17) do not (benchmarks/results/default_search.json)
DEFAULT_CANDIDATES: dict[str, dict[str, Any]] = {
    "default (as shipped)": {},
    "30 epochs": {"train": {"epochs": 30}},
    # round 2: elastic distortion on top of the affine (Simard et al. 2003: a CNN's error fell
    # from 0.60 % with affine distortions to 0.40 % with elastic ones), at their strength 34
    # and smoothness 4 pixels, and at half the strength; the cost is two small matrix products
    # per batch, so the schedule stays at 20 epochs
    "elastic 34/4": {"data": {"augment": {"elastic_alpha": 34.0, "elastic_sigma": 4.0}}},
    "elastic 17/4": {"data": {"augment": {"elastic_alpha": 17.0, "elastic_sigma": 4.0}}},
}
# name -> overrides of the `vit` recipe; searched on a shortened schedule (--epochs 6 of its 36).
# The search began from lr 1e-3 (its baseline here); lr 2e-3 won and is the recipe's now.
_VIT_FIRST = {"optim": {"lr": 1e-3}}
VIT_CANDIDATES: dict[str, dict[str, Any]] = {
    "vit at lr 1e-3 (the first recipe)": _VIT_FIRST,
    # the plain ViT: a 4x4 patch projection instead of the convolutional stem
    "patch stem": {**_VIT_FIRST, "model": {"stem": "patch"}},
    "2 heads": {**_VIT_FIRST, "model": {"heads": 2}},
    "lr 2e-3 (as shipped)": {},
}
CANDIDATES = {"fast": FAST_CANDIDATES, "default": DEFAULT_CANDIDATES, "vit": VIT_CANDIDATES}
VAL_FRACTION = 5000 / 60000


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=sorted(CANDIDATES), default="fast",
                   help="the recipe whose candidates are searched (default: fast)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per candidate (default: 2)")
    p.add_argument("--candidates", default=None,
                   help="comma-separated candidate numbers, 0-based (default: all)")
    p.add_argument("--epochs", type=int, default=None,
                   help="train every candidate for this many epochs, a shortened schedule "
                        "(default: the recipe's own)")
    p.add_argument("--data-dir", default=str(ROOT / "data" / "mnist"))
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default: 1; 2 spin against busy neighbours)")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    candidates = CANDIDATES[args.recipe]
    names = list(candidates)
    if args.candidates:
        names = [names[int(i)] for i in args.candidates.split(",")]
    baseline = next(iter(candidates))
    if names[0] != baseline:
        names.insert(0, baseline)  # the baseline every ratio refers to
    load_before = [round(x, 2) for x in os.getloadavg()]
    peak = matmul_peak_gflops(1024)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    macs: dict[str, int] = {}
    for seed in range(args.seeds):
        data_cache: dict[int, Any] = {}
        for name in names:
            layer = _merge({"data": {"data_dir": args.data_dir, "val_fraction": VAL_FRACTION},
                            "train": {"seed": seed, "device": "cpu"}}, candidates[name])
            if args.epochs:
                layer = _merge(layer, {"train": {"epochs": args.epochs}})
            cfg = resolve_config(layer, recipe=args.recipe)
            limit = cfg.data.limit
            if limit not in data_cache:
                data_cache[limit] = prepare_data(cfg.data, seed=seed, progress=False)
            data = data_cache[limit]
            result = fit(cfg, progress=False, data=data)
            m = result.metrics
            macs[name] = summarize(build_model(cfg, data), None).total_macs
            runs[name].append({"seed": seed, "val_accuracy": m["val_accuracy"],
                               # the last epoch's: what a recipe without validation ships
                               "val_accuracy_last": result.history[-1]["val_accuracy"],
                               "best_epoch": m.get("best_epoch"),
                               "train_time_s": m["train_time_s"],
                               "images_per_s": m["images_per_s"],
                               "train_images": m["train_images"]})
            print(f"{name} seed {seed}: {runs[name][-1]}", file=sys.stderr)
    rows = []
    for name in names:
        r = runs[name]
        accs = [x["val_accuracy"] for x in r]
        lasts = [x["val_accuracy_last"] for x in r]
        ratios = [x["train_time_s"] / b["train_time_s"]
                  for x, b in zip(r, runs[names[0]], strict=True)]
        ips = statistics.median(x["images_per_s"] for x in r)
        rows.append({
            "candidate": name, "overrides": candidates[name], "forward_macs": macs[name],
            "train_flops_per_image": 6 * macs[name],
            "val_accuracy_mean": round(statistics.mean(accs), 5),
            "val_accuracy_min": min(accs), "val_accuracy_max": max(accs),
            "val_accuracy_last_epoch_mean": round(statistics.mean(lasts), 5),
            "train_time_s_median": round(statistics.median(x["train_time_s"] for x in r), 2),
            "time_vs_baseline_median": round(statistics.median(ratios), 3),
            "images_per_s_median": ips,
            "fraction_of_matmul_peak": round(ips * 6 * macs[name] / (peak * 1e9), 4),
            "runs": r,
        })
    out = {
        "benchmark": f"{args.recipe}_search",
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "load_average_before": load_before,
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "matmul_peak_gflops": round(peak, 1),
        "split": "55,000 training / 5,000 validation images (stratified, seeded); test unread",
        "epochs": args.epochs or "the recipe's own",
        "candidates": rows,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
