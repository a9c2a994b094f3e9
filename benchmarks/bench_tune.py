"""Grid against random and TPE search on the paper's Table III space; prints JSON.

Runs ``cnnlab tune --space table3`` once per sampler (or continues/reads a study already in
--out: a rerun of a finished study adds no trial), then reports for each sampler its trials,
wall time, best validation accuracy, the best configuration's test accuracy, and how many
trials it took to reach the grid's best validation accuracy.

    python benchmarks/bench_tune.py                       # grid (243), random and tpe (60 each)
    python benchmarks/bench_tune.py --trials 60 --tpe-trials 120

Run it alone: trials are timed, and the machine's cores are shared by the workers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import machine


def _cnnlab(*args: str) -> list[str]:
    return [sys.executable, "-c", "from cnnlab.cli.main import entry; entry()", *args]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/tune", help="parent directory of the studies")
    p.add_argument("--samplers", default="grid,random,tpe")
    p.add_argument("--trials", type=int, default=60, help="trials of random and tpe")
    p.add_argument("--tpe-trials", type=int, default=None, help="trials of tpe (default: --trials)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--set", action="append", default=["model.width=8"],
                   help="settings for every trial (default: model.width=8)")
    args = p.parse_args()

    import optuna

    from cnnlab.tune.results import trials_to_reach

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict[str, dict] = {}
    for sampler in args.samplers.split(","):
        out = Path(args.out) / f"table3-{sampler}"
        cmd = ["tune", "--space", "table3", "--sampler", sampler, "--workers",
               str(args.workers), "--data-dir", args.data_dir, "--out", str(out), "--json", "-q"]
        for item in args.set:
            cmd += ["--set", item]
        if sampler == "tpe" and args.tpe_trials:
            cmd += ["--trials", str(args.tpe_trials)]
        elif sampler != "grid":
            cmd += ["--trials", str(args.trials)]
        t0 = time.perf_counter()
        done = subprocess.run(_cnnlab(*cmd), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{sampler}: {done.stderr.strip()}")
        summary = json.loads(done.stdout)
        best = summary.get("best", {})
        results[sampler] = {
            "trials": summary["trials"], "states": summary["states"],
            "wall_time_min": round((summary.get("wall_time_s") or 0) / 60, 2),
            "trial_time_min": round(summary["trial_time_s"] / 60, 2),
            "this_run_s": round(time.perf_counter() - t0, 1),
            "best_val_accuracy": best.get("val_accuracy"),
            "best_test_accuracy": best.get("test_accuracy"),
            "best_params": best.get("params"),
            "storage": summary["storage"], "study": summary["study"],
        }
    if "grid" in results and results["grid"]["best_val_accuracy"] is not None:
        target = results["grid"]["best_val_accuracy"]
        for r in results.values():
            study = optuna.load_study(study_name=r["study"], storage=r["storage"])
            r["trials_to_reach_grid_best"] = trials_to_reach(study, target)
    print(json.dumps({
        "machine": machine(),
        "space": "table3", "workers": args.workers, "settings": args.set, "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
