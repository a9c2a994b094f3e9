"""Sparsity against accuracy: magnitude and channel pruning of the ``fast`` MNIST model; prints
JSON and saves the curve as a PNG.

For each method and amount (0, 0.25, 0.5, 0.75, 0.9 by default) the ``fast`` recipe's
convnet (runs/fast/model.pt, trained first if missing) is pruned and fine-tuned for
--finetune-epochs with its own recipe (one-cycle Adam, label smoothing) on all 60,000
training images. Reported per point: MNIST test accuracy right after pruning and after
fine-tuning, parameters (and non-zero ones), MACs per image, and for channel pruning the
batch-1 latency (``measure_inference``; magnitude pruning keeps the dense shapes, so its
latency is the unpruned model's, measured once at amount 0).

    python benchmarks/bench_prune.py                  # about 2 minutes on 2 cores
    python benchmarks/bench_prune.py --amounts 0,0.5,0.9 --methods channel

Run it alone: the latencies are timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import machine


def _plot(points: list[dict], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"magnitude": "tab:blue", "channel": "tab:orange"}
    for method, colour in colours.items():
        rows = [p for p in points if p["method"] == method]
        if not rows:
            continue
        x = [p["amount"] for p in rows]
        left.plot(x, [100 * p["accuracy_pruned"] for p in rows], "--o", color=colour,
                  alpha=0.6, label=f"{method}, pruned")
        left.plot(x, [100 * p["accuracy_finetuned"] for p in rows], "-o", color=colour,
                  label=f"{method}, fine-tuned")
        right.plot([p["nonzero_params"] / 1e3 for p in rows],
                   [100 * p["accuracy_finetuned"] for p in rows], "-o", color=colour,
                   label=method)
        for p in rows:
            right.annotate(f"{p['amount']:g}", (p["nonzero_params"] / 1e3,
                                                100 * p["accuracy_finetuned"]),
                           fontsize=7, xytext=(3, 3), textcoords="offset points")
    left.set_xlabel("amount pruned")
    left.set_ylabel("MNIST test accuracy (%)")
    left.set_title("accuracy against pruning amount")
    left.set_ylim(bottom=max(0, left.get_ylim()[0]))
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    right.set_xscale("log")
    ticks = [1, 2, 5, 10, 20, 50, 100]
    right.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    right.set_xticks(ticks, [str(t) for t in ticks])
    right.set_xlabel("non-zero parameters (thousands)")
    right.set_ylabel("test accuracy after fine-tuning (%)")
    right.set_title("fine-tuned accuracy against size (labels: amount)")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="runs/fast", help="run directory to prune "
                   "(default: runs/fast, trained with the fast recipe if missing)")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--work", default="runs/bench-prune", help="where the pruned runs go")
    p.add_argument("--out", default="runs/bench-prune/curve.png", help="the PNG curve")
    p.add_argument("--methods", default="magnitude,channel")
    p.add_argument("--amounts", default="0,0.25,0.5,0.75,0.9")
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=None,
                   help="peak fine-tuning learning rate (default: the recipe's)")
    p.add_argument("--limit", type=int, default=0,
                   help="fine-tune on this many training images (default: all)")
    p.add_argument("--latency-runs", type=int, default=200)
    args = p.parse_args()

    import dataclasses

    import cnnlab
    from cnnlab.config import resolve_config
    from cnnlab.deploy.prune import prune_checkpoint
    from cnnlab.evaluate.timing import measure_inference
    from cnnlab.training.data import prepare_data
    from cnnlab.training.loop import fit

    source = Path(args.source)
    if not (source / "model.pt").is_file():
        fit(resolve_config({"data": {"data_dir": args.data_dir}}, recipe="fast"),
            out_dir=source, overwrite=True, progress=False)
    src = cnnlab.load(source)
    cfg = resolve_config(src.config)
    data_cfg = dataclasses.replace(cfg.data, data_dir=args.data_dir, limit=args.limit)
    data = prepare_data(data_cfg, seed=cfg.train.seed, progress=False)  # loaded once

    def latency(path: Path) -> dict:
        model = cnnlab.load(path).classifier
        t = measure_inference(model, model.input_spec.shape, latency_runs=args.latency_runs,
                              batch_size=1000, throughput_runs=3)
        return {"latency_ms_p50": t["latency_ms_p50"], "latency_ms_p95": t["latency_ms_p95"],
                "throughput_images_per_s": t["throughput_images_per_s"]}

    points = []
    t_all = time.perf_counter()
    for method in args.methods.split(","):
        for amount in (float(a) for a in args.amounts.split(",")):
            out = Path(args.work) / f"{method}-{amount:g}"
            t0 = time.perf_counter()
            r = prune_checkpoint(source, method=method, amount=amount,
                                 finetune_epochs=args.finetune_epochs, out=out,
                                 overwrite=True, progress=False, lr=args.lr, data=data)
            point = {
                "method": method, "amount": amount, "sparsity": r["sparsity"],
                "accuracy_source": r["accuracy"]["source"],
                "accuracy_pruned": r["accuracy"]["pruned"],
                "accuracy_finetuned": r["accuracy"]["finetuned"],
                "params": r["params"]["after"], "nonzero_params": r["params"]["nonzero_after"],
                "macs": r["macs"]["after"],
                "model_kwargs": r["model"]["kwargs"] if method == "channel" else None,
                "finetune_time_s": r["finetune_time_s"],
                "wall_s": round(time.perf_counter() - t0, 1),
            }
            if method == "channel" or amount == 0:
                point.update(latency(out / "model.pt"))
            points.append(point)
            print(json.dumps(point), flush=True, file=sys.stderr)
    _plot(points, Path(args.out))
    print(json.dumps({
        "machine": machine(),
        "source": str(source), "source_test_accuracy": src.metrics.get("test_accuracy"),
        "finetune_epochs": args.finetune_epochs,
        "finetune_images": len(data.train), "test_images": len(data.test or []),
        "lr": args.lr or cfg.optim.lr,
        "points": points, "plot": args.out,
        "total_s": round(time.perf_counter() - t_all, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
