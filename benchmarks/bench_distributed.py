"""Data-parallel training on this machine: 1 process x 2 threads against 2 processes x 1 thread
(torchrun, gloo on the CPU). Prints one JSON object.

Each setting trains the same run through the CLI in a fresh process (``cnnlab train --threads
2`` and ``cnnlab train --nproc 2 --threads 1``: the same global batch, seed and data, MNIST
``--limit`` images from ``data/mnist``); the figure is the training throughput the run records
(``metrics.json``: images / training seconds, start-up and validation excluded) and the wall
time of the whole command. The settings alternate for ``--rounds`` rounds; medians are
reported with the ratio of the two, paired round by round, and the load average.

    python benchmarks/bench_distributed.py                 # about 4 minutes on 2 cores
    python benchmarks/bench_distributed.py --model paper-cnn --limit 12000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine

SETTINGS = {"1x2": ["--threads", "2"], "2x1": ["--nproc", "2", "--threads", "1"]}


def _run(work: Path, name: str, args: argparse.Namespace) -> dict[str, float]:
    out = work / name
    command = [sys.executable, "-m", "cnnlab.cli.main", "train", "--model", args.model,
               "--data-dir", args.data_dir, "--limit", str(args.limit), "--epochs",
               str(args.epochs), "--batch-size", str(args.batch_size), "--no-report", "-q",
               "--overwrite", "--out", str(out), *SETTINGS[name]]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    t0 = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    metrics = json.loads((out / "metrics.json").read_text())
    return {"images_per_s": float(metrics["images_per_s"]), "wall_s": wall,
            "test_accuracy": float(metrics.get("test_accuracy", float("nan")))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--limit", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args()

    runs: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    loads = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        for r in range(args.rounds):
            order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
            for name in order:
                runs[name].append(_run(Path(tmp), name, args))
                print(json.dumps({"round": r, "setting": name, **runs[name][-1]}),
                      file=sys.stderr)
            loads.append(os.getloadavg())
    ratios = [b["images_per_s"] / a["images_per_s"]
              for a, b in zip(runs["1x2"], runs["2x1"], strict=True)]
    print(json.dumps({
        "benchmark": "distributed", "machine": machine(),
        "settings": {"model": args.model, "limit": args.limit, "epochs": args.epochs,
                     "global_batch": args.batch_size, "rounds": args.rounds},
        "median": {name: {k: round(statistics.median(x[k] for x in v), 2)
                          for k in ("images_per_s", "wall_s", "test_accuracy")}
                   for name, v in runs.items()},
        "ratio_2x1_over_1x2_images_per_s": round(statistics.median(ratios), 3),
        "ratios": [round(x, 3) for x in ratios], "loadavg": loads, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
