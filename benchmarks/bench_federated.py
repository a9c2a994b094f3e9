"""Federated MNIST against the issue's targets (McMahan et al. 2017). Prints one JSON object.

Each scenario is one ``cnnlab federated simulate`` run on Flower's simulation engine (Ray, one
client per core) on the full MNIST in ``data/mnist``; the figure is the first round whose
global-model test accuracy reaches the target, and the whole run's wall time:

- ``iid``: 100 clients, 10 % per round, target >= 99 % in <= 20 rounds;
- ``shards``: the pathological non-IID split (2 label-sorted shards per client), and
  ``writer`` (whole NIST writers from the QMNIST labels): >= 99 % in <= 200 rounds within 60
  minutes on 2 cores; ``--strategies fedavg,fedprox`` runs each on the same seed.

A run stops early once the target is reached (``--stop-at-target``, on by default) to save the
shared cores: ``rounds`` is then the rounds run. The load average is recorded with each run.

    python benchmarks/bench_federated.py --scenarios iid                     # ~10-20 min
    python benchmarks/bench_federated.py --scenarios shards,writer --rounds 200 \\
        --strategies fedavg,fedprox                                         # hours on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine

SCENARIOS = {"iid": ("iid", 20), "shards": ("shards:2", 200), "writer": ("writer", 200)}


def _curve(rounds_csv: Path, column: str) -> list[float]:
    """One column of a run's rounds.csv, rounds 1.. (round 0 is the initial model)."""
    import csv

    rows = list(csv.DictReader(rounds_csv.read_text().splitlines()))
    return [round(float(r[column]), 4) for r in rows if int(r["round"]) > 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="iid")
    parser.add_argument("--strategies", default="fedavg")
    parser.add_argument("--rounds", type=int, default=0, help="0: the target's round budget")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=0,
                        help="clients training at once (0: one per core); 1 to run two "
                             "benchmarks side by side, a core each")
    parser.add_argument("--model", default="paper-cnn")
    parser.add_argument("--model-arg", action="append", default=[], dest="model_args",
                        metavar="KEY=VALUE",
                        help="a model hyperparameter (repeatable); kernel_size=5 and hidden=512 "
                             "make paper-cnn McMahan et al.'s CNN (1,663,370 parameters)")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=1 / 12,
                        help="share of the training split the server holds out (1/12: 5,000 "
                             "images; McMahan et al. held none out)")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--time-budget-min", type=float, default=60.0)
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("cnnlab").setLevel(logging.INFO)  # one line per round, on stderr

    from cnnlab.config import parse_set
    from cnnlab.federated import FederatedSettings
    from cnnlab.federated.simulate import simulate

    model_kwargs = parse_set(args.model_args)
    work = Path(args.out or tempfile.mkdtemp(prefix="bench-federated-"))
    results = []
    for name in args.scenarios.split(","):
        partition, budget = SCENARIOS[name]
        for strategy in args.strategies.split(","):
            s = FederatedSettings(
                out=str(work / f"{name}-{strategy}"), data_dir=args.data_dir,
                clients=args.clients, partition=partition, rounds=args.rounds or budget,
                strategy=strategy, local_epochs=args.local_epochs, fraction=args.fraction,
                batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                model=args.model, model_kwargs=model_kwargs, seed=args.seed,
                val_fraction=args.val_fraction,
                target_accuracy=args.target, stop_at_target=True,
                time_budget_s=args.time_budget_min * 60)
            load_before = os.getloadavg()
            t0 = time.perf_counter()
            m = simulate(s, workers=args.workers or None, overwrite=True, progress=False)
            results.append({
                "scenario": name, "partition": partition, "strategy": strategy,
                "round_budget": budget, "rounds_run": m["rounds_run"],
                "rounds_to_target": m["rounds_to_target_test"],
                "target_met": m["rounds_to_target_test"] is not None
                and m["rounds_to_target_test"] <= budget,
                "final_test_accuracy": m.get("test_accuracy"),
                "best_val_round": m.get("best_val_round"),
                "wall_s": round(time.perf_counter() - t0, 1),
                "stopped_by_time_budget": m.get("stopped_by_time_budget", False),
                "bytes_sent": m["bytes_sent"],
                "test_accuracy_by_round": _curve(Path(s.out) / "rounds.csv", "test_accuracy"),
                "val_accuracy_by_round": _curve(Path(s.out) / "rounds.csv", "val_accuracy"),
                "loadavg_before": load_before,
                "loadavg_after": os.getloadavg(), "run_dir": s.out})
            print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps({
        "benchmark": "federated", "machine": machine(),
        "settings": {"clients": args.clients, "fraction": args.fraction,
                     "local_epochs": args.local_epochs, "batch_size": args.batch_size,
                     "lr": args.lr, "momentum": args.momentum, "model": args.model,
                     "model_kwargs": model_kwargs, "val_fraction": args.val_fraction,
                     "seed": args.seed,
                     "target": args.target},
        "results": results}, indent=1))


if __name__ == "__main__":
    main()
