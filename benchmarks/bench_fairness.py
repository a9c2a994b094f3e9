"""Benchmark the writer-population mitigations on real MNIST; prints one JSON object.

Each arm trains the same recipe on MNIST train (all 60,000 images) for several seeds and is
scored on MNIST test by writer population (QMNIST labels): test 0-4999 are high-school
students, 5000-9999 Census Bureau employees. Arms:

- ``baseline``: the recipe as it is;
- ``reweight``: population-balanced loss weights with the student group emphasised
  (``--emphasis``, default 2: a student digit weighs about twice an employee digit);
- ``thickness``: a share (``--thickness-p``) of the training digits get thinner (70 %) or
  thicker strokes, aimed at the students' thinner strokes;
- ``both``: the two together.

Figures are means over the seeds; intervals are 95 % bootstrap intervals that resample test
*writers* (all their digits together) for the seed-averaged per-digit error. The relative
change of the student error against the baseline is paired: each draw uses the same writers
for both arms. The default recipe takes ~10 min a seed on 2 idle cores, so by default every
arm runs it for ``--epochs 3`` (the one-cycle schedule compressed to 3 epochs): a reduced,
stated budget, the same for all arms.

    python benchmarks/bench_fairness.py                          # default recipe, 3 epochs, 3 seeds
    python benchmarks/bench_fairness.py --recipe fast --epochs 1 --arms baseline,both
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine  # noqa: E402
from cnnlab.config import resolve_config  # noqa: E402
from cnnlab.data import load_dataset  # noqa: E402
from cnnlab.data.qmnist import load_writers  # noqa: E402
from cnnlab.fairness.mitigation import mitigated_data  # noqa: E402
from cnnlab.inference.batched import predict_logits  # noqa: E402
from cnnlab.training.data import prepare_data  # noqa: E402
from cnnlab.training.loop import fit  # noqa: E402

ARMS = ("baseline", "reweight", "thickness", "both")


def train_and_score(arm: str, seed: int, args: argparse.Namespace) -> np.ndarray:
    """Per-digit test errors (10,000,) of one arm and seed (kept in ``--cache`` to be reused)."""
    cache = None
    if args.cache:
        knobs = "" if arm == "baseline" else f"-w{args.emphasis:g}-t{args.thickness_p:g}"
        key = f"{args.recipe}-e{args.epochs}-{arm}-s{seed}{knobs}.npy"
        cache = Path(args.cache) / key
        if cache.is_file():
            return np.load(cache)
    errors = _train_and_score(arm, seed, args)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, errors)
    return errors


def _train_and_score(arm: str, seed: int, args: argparse.Namespace) -> np.ndarray:
    cfg = resolve_config({"data": {"data_dir": args.data_dir},
                          "train": {"epochs": args.epochs, "seed": seed}}, recipe=args.recipe)
    data = prepare_data(cfg.data, seed=seed, progress=False)
    if arm != "baseline":
        data = mitigated_data(
            data, args.data_dir,
            emphasis={"student": args.emphasis} if arm in ("reweight", "both") else None,
            thickness_p=args.thickness_p if arm in ("thickness", "both") else 0.0, seed=seed)
        if arm == "thickness":
            data.train_weights = None  # thickness alone: no reweighting
    result = fit(cfg, data=data, progress=False)
    test = load_dataset("mnist", "test", data_dir=args.data_dir, progress=False)
    logits = predict_logits(result.model, test.images, data.mean, data.std)
    return (logits.argmax(1) != test.targets).numpy().astype(np.float64)


def writer_sums(errors: np.ndarray, writer_index: np.ndarray, n_writers: int
                ) -> tuple[np.ndarray, np.ndarray]:
    return (np.bincount(writer_index, weights=errors, minlength=n_writers),
            np.bincount(writer_index, minlength=n_writers).astype(np.float64))


def interval(draws: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in np.quantile(draws, [0.025, 0.975])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="default")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--arms", default="baseline,reweight,both")
    parser.add_argument("--emphasis", type=float, default=2.0)
    parser.add_argument("--thickness-p", type=float, default=0.5)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--cache", default="", help="a folder keeping each run's test errors")
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    for a in arms:
        if a not in ARMS:
            parser.error(f"unknown arm {a!r}; choose from {', '.join(ARMS)}")
    if "baseline" not in arms:
        arms.insert(0, "baseline")

    labels = load_writers("test", data_dir=args.data_dir)
    pop = labels.population
    ids, writer_index = np.unique(labels.writer, return_inverse=True)
    student_writer = np.array([pop[labels.writer == w][0] == "student" for w in ids])
    load_before = os.getloadavg()
    errors: dict[str, list[np.ndarray]] = {a: [] for a in arms}
    times: dict[str, list[float]] = {a: [] for a in arms}
    for seed in range(args.seeds):
        for arm in arms:
            t0 = time.perf_counter()
            errors[arm].append(train_and_score(arm, seed, args))
            times[arm].append(time.perf_counter() - t0)
            e = errors[arm][-1]
            print(f"{arm} seed {seed}: error {e.mean():.4%}, students "
                  f"{e[pop == 'student'].mean():.4%}, employees "
                  f"{e[pop == 'employee'].mean():.4%} ({times[arm][-1]:.0f} s)",
                  file=sys.stderr, flush=True)

    rng = np.random.default_rng(0)
    n_w = len(ids)
    draws = rng.multinomial(n_w, np.full(n_w, 1.0 / n_w), size=args.n_boot).astype(np.float64)
    sums = {a: writer_sums(np.mean(errors[a], axis=0), writer_index, n_w) for a in arms}

    def group_draws(arm: str, mask: np.ndarray | None) -> np.ndarray:
        err, cnt = sums[arm]
        m = np.ones(n_w, bool) if mask is None else mask
        return (draws[:, m] @ err[m]) / (draws[:, m] @ cnt[m])

    out: dict[str, object] = {
        "benchmark": "fairness_mitigation",
        "recipe": args.recipe, "epochs": args.epochs, "seeds": args.seeds,
        "budget_note": (f"every arm trains the {args.recipe} recipe for {args.epochs} epochs, "
                        "the same budget for all arms (the default recipe's own is 20 epochs)"),
        "emphasis_student": args.emphasis, "thickness_p": args.thickness_p,
        "test": {"students": int((pop == "student").sum()),
                 "employees": int((pop == "employee").sum()), "writers": int(n_w)},
        "interval": "95 % bootstrap over test writers (n_boot "
                    f"{args.n_boot}), of the seed-averaged per-digit error",
        "arms": {},
    }
    base = {k: group_draws("baseline", m) for k, m in
            (("overall", None), ("student", student_writer), ("employee", ~student_writer))}
    for arm in arms:
        per_seed = np.array(errors[arm])  # (seeds, 10000)
        rec: dict[str, object] = {"train_time_s_median": round(float(np.median(times[arm])), 1)}
        for key, mask, sel in (("overall", None, slice(None)),
                               ("student", student_writer, pop == "student"),
                               ("employee", ~student_writer, pop == "employee")):
            d = group_draws(arm, mask)
            rec[f"{key}_error"] = round(float(per_seed[:, sel].mean()), 6)
            rec[f"{key}_error_ci"] = interval(d)
            rec[f"{key}_error_per_seed"] = [round(float(v), 6) for v in per_seed[:, sel].mean(1)]
            if arm != "baseline":
                rel = d / base[key] - 1
                rec[f"{key}_relative_change"] = round(
                    float(per_seed[:, sel].mean() / np.mean(errors["baseline"], axis=0)[sel].mean()
                          - 1), 4)
                rec[f"{key}_relative_change_ci"] = interval(rel)
        gap = group_draws(arm, student_writer) - group_draws(arm, ~student_writer)
        rec["student_minus_employee_error"] = round(
            float(per_seed[:, pop == "student"].mean() - per_seed[:, pop == "employee"].mean()), 6)
        rec["student_minus_employee_error_ci"] = interval(gap)
        out["arms"][arm] = rec  # type: ignore[index]
    out["target"] = ("student error -20 % relative to baseline, overall error not raised")
    out["load_avg"] = {"before": [round(v, 2) for v in load_before],
                       "after": [round(v, 2) for v in os.getloadavg()]}
    out["machine"] = machine()
    out["threads"] = torch.get_num_threads()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
