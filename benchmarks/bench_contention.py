"""Does cnnlab hold up with a busy neighbour on one core? Prints one JSON object.

Issue 14 §3: with one of the two cores busy, training with torch's default thread count ran
about 6x slower than with ``--threads 1``. This measures, on an idle machine and with a
busy-loop neighbour process pinned to the last usable core (a pure-Python ``while True:
pass``, killed at the end):

- training throughput (img/s) of a short ``fast``-recipe run (convnet, ``--limit`` MNIST
  images from ``data/mnist``, 1 epoch) through the CLI in a fresh process, so thread
  settings apply from process start;
- batch-1 latency p50/p99 (ms) of the packaged default model, ``cnnlab.load("default",
  engine=...)`` for ``torch`` and ``auto``, in a fresh process;

for the thread settings ``torch-default`` (cnnlab before the thread policy: ``main()`` without
the entry point's policy), ``threads-1``, ``threads-2`` (``--threads N``) and ``policy`` (the
``cnnlab`` entry point as shipped: :mod:`cnnlab._threads`). ``--candidates`` adds OpenMP
wait-policy variants on top of torch's default. Settings run in a rotating order, the two
conditions alternate every round, and each figure is the median over the rounds. The ratios
are default/best: the setting's throughput (or 1/latency, for p50 and p99) over the best of
threads-1 and threads-2 in the same condition, of the medians and paired round by round; the
target is >= 0.8 with one core busy.

    python benchmarks/bench_contention.py              # about 5 minutes on 2 cores
    python benchmarks/bench_contention.py --rounds 3 --candidates
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
from typing import Any

from _common import machine

ROOT = Path(__file__).resolve().parents[1]

# (environment added, thread flag, whether the entry point's policy runs)
SETTINGS: dict[str, tuple[dict[str, str], int, bool]] = {
    "torch-default": ({}, 0, False),
    "threads-1": ({}, 1, True),
    "threads-2": ({}, 2, True),
    "policy": ({}, 0, True),
}
CANDIDATES: dict[str, tuple[dict[str, str], int, bool]] = {
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, 0, False),
    "spin-10k": ({"GOMP_SPINCOUNT": "10000"}, 0, False),
}

TRAIN_CHILD = """
import sys
sys.path.insert(0, {src!r})
from cnnlab.cli.main import _tune_malloc, entry, main
argv = sys.argv[1:]
if {policy}:
    sys.argv = ["cnnlab", *argv]
    entry()
_tune_malloc()
sys.exit(main(argv))
"""

LATENCY_CHILD = """
import json, os, statistics, sys, time
sys.path.insert(0, {src!r})
threads = {threads}
if {policy}:
    from cnnlab._threads import apply_thread_policy
    apply_thread_policy(["--threads", str(threads)] if threads else [])
import torch
import cnnlab
out = {{"torch_threads": torch.get_num_threads()}}
for engine in ("torch", "auto"):
    # --threads N also sets ONNX Runtime's threads; otherwise its default, one per core
    model = cnnlab.load("default", engine=engine, threads=threads)
    x = torch.zeros(1, *model.input_spec.shape, dtype=torch.uint8)
    for _ in range(30):
        model.predict_proba(x)
    times = []
    deadline = time.perf_counter() + {seconds}
    while len(times) < {calls} and time.perf_counter() < deadline:
        t0 = time.perf_counter()
        model.predict_proba(x)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    out[engine] = {{"engine": model.engine, "calls": len(times),
                   "p50_ms": statistics.median(times),
                   "p99_ms": times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]}}
print(json.dumps(out))
"""


def _env(extra: dict[str, str], cache: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS")}
    env["CNNLAB_ENGINE_CACHE"] = cache
    env.update(extra)
    return env


def _child(cmd: list[str], env: dict[str, str]) -> str:
    """A child's stdout; one retry, so that one failed run does not lose the others, then
    an error with the end of its stderr."""
    for _ in range(2):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if done.returncode == 0:
            return done.stdout
    raise RuntimeError(f"{cmd[3:6]} failed twice: {done.stderr[-2000:]}")


def train_rate(setting: tuple[dict[str, str], int, bool], args: argparse.Namespace,
               work: Path) -> tuple[float, int]:
    """The run's img/s and the torch threads it recorded in env.json."""
    extra, threads, policy = setting
    out = work / "run"
    argv = ["train", "--recipe", "fast", "--data-dir", args.data_dir, "--limit", str(args.limit),
            "--out", str(out), "--overwrite", "--no-report", "-q", "--json"]
    if threads:
        argv += ["--threads", str(threads)]
    code = TRAIN_CHILD.format(src=str(ROOT / "src"), policy=policy)
    stdout = _child([sys.executable, "-c", code, *argv], _env(extra, str(work / "engines")))
    rate = float(json.loads(stdout.strip().splitlines()[-1])["images_per_s"])
    return rate, int(json.loads((out / "env.json").read_text())["threads"])


def latency(setting: tuple[dict[str, str], int, bool], args: argparse.Namespace,
            work: Path) -> dict[str, Any]:
    extra, threads, policy = setting
    code = LATENCY_CHILD.format(src=str(ROOT / "src"), policy=policy, threads=threads,
                                calls=args.calls, seconds=args.seconds)
    stdout = _child([sys.executable, "-c", code], _env(extra, str(work / "engines")))
    return json.loads(stdout.strip().splitlines()[-1])


def start_neighbour() -> tuple[subprocess.Popen[bytes], int]:
    """A pure-Python busy loop pinned to the last core this process may use."""
    cpu = max(os.sched_getaffinity(0))
    code = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True:\n    pass\n"
    proc = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(1.0)  # running, and seen as busy by the policy's probe
    return proc, cpu


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def summarise(raw: dict[str, dict[str, list[Any]]], names: list[str]) -> dict[str, Any]:
    """Medians over the rounds per setting, and each setting's ratio to the best of threads-1
    and threads-2: of the medians, and the median of the ratios paired round by round."""
    out: dict[str, Any] = {}
    for name in names:
        runs = raw[name]
        entry: dict[str, Any] = {"train_img_s": _median(runs["train"]),
                                 "train_img_s_all": [round(v) for v in runs["train"]],
                                 "train_threads": runs["train_threads"]}
        for engine in ("torch", "auto"):
            lat = [r[engine] for r in runs["latency"]]
            entry[f"{engine}_batch1"] = {
                "engine": lat[0]["engine"],
                "p50_ms": _median([r["p50_ms"] for r in lat]),
                "p99_ms": _median([r["p99_ms"] for r in lat])}
        entry["latency_torch_threads"] = [r["torch_threads"] for r in runs["latency"]]
        out[name] = entry

    def speeds(name: str) -> dict[str, list[float]]:  # higher is better, one per round
        lat = raw[name]["latency"]
        return {"train": raw[name]["train"],
                **{f"{e}_batch1_{q}": [1 / r[e][f"{q}_ms"] for r in lat]
                   for e in ("torch", "auto") for q in ("p50", "p99")}}

    best = {k: [max(a, b) for a, b in zip(v, speeds("threads-2")[k], strict=True)]
            for k, v in speeds("threads-1").items()}
    ratios: dict[str, dict[str, float]] = {}
    for name in names:
        ratios[name] = {}
        for key, values in speeds(name).items():
            ratios[name][key] = round(statistics.median(values) / max(
                statistics.median(speeds("threads-1")[key]),
                statistics.median(speeds("threads-2")[key])), 3)
            ratios[name][f"{key}_paired"] = round(statistics.median(
                v / b for v, b in zip(values, best[key], strict=True)), 3)
    out["ratio_to_best_thread_setting"] = ratios
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="rounds per condition (default: 5)")
    p.add_argument("--limit", type=int, default=12000, help="training images (default: 12000)")
    p.add_argument("--calls", type=int, default=500, help="batch-1 calls per engine (default: 500)")
    p.add_argument("--seconds", type=float, default=3.0,
                   help="at most this long per engine's batch-1 calls (default: 3)")
    p.add_argument("--data-dir", default=str(ROOT / "data"), help="MNIST files (default: data/)")
    p.add_argument("--candidates", action="store_true",
                   help="also measure OpenMP wait-policy variants of torch's default")
    p.add_argument("--conditions", default="idle,busy", help="idle,busy (default: both)")
    args = p.parse_args()
    settings = dict(SETTINGS, **(CANDIDATES if args.candidates else {}))
    names = list(settings)
    conditions = args.conditions.split(",")
    raw: dict[str, dict[str, dict[str, list[Any]]]] = {
        c: {n: {"train": [], "train_threads": [], "latency": []} for n in names}
        for c in conditions}
    neighbour_cpu = None
    with tempfile.TemporaryDirectory(prefix="bench-contention-") as tmp:
        work = Path(tmp)
        latency(SETTINGS["torch-default"], args, work)  # auto measures its pick once, idle
        for rnd in range(args.rounds):
            for condition in (conditions if rnd % 2 == 0 else conditions[::-1]):
                order = names[rnd % len(names):] + names[:rnd % len(names)]
                neighbour = None
                try:
                    if condition == "busy":
                        neighbour, neighbour_cpu = start_neighbour()
                    for name in order:
                        rate, used = train_rate(settings[name], args, work)
                        raw[condition][name]["train"].append(rate)
                        raw[condition][name]["train_threads"].append(used)
                        raw[condition][name]["latency"].append(latency(settings[name], args, work))
                finally:
                    if neighbour is not None:
                        neighbour.kill()
                        neighbour.wait()
                print(f"round {rnd + 1}/{args.rounds} {condition} done", file=sys.stderr)
    print(json.dumps({
        "benchmark": "contention", "machine": machine(), "load_at_end": Path(
            "/proc/loadavg").read_text().split()[:3],
        "setup": {"train": f"cnnlab train --recipe fast --limit {args.limit} (1 epoch)",
                  "latency": f"cnnlab.load('default', engine=...).predict_proba, batch 1, "
                             f"up to {args.calls} calls", "rounds": args.rounds,
                  "neighbour": f"python busy loop pinned to cpu {neighbour_cpu}",
                  "statistic": "median over rounds"},
        **{c: summarise(raw[c], names) for c in conditions}}, indent=1))


if __name__ == "__main__":
    main()
