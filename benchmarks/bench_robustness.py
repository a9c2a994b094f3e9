"""Robustness of trained models (issue 15 §1): the whole ``cnnlab robustness`` suite on the
first ``--images`` MNIST test digits for each model, its time, and the cost of the per-
prediction confidence, energy and ood flag; prints JSON.

Models: ``fast`` (``cnnlab train --recipe fast --data-dir data --out runs/fast``, trained here
when ``--fast`` has no model.pt) and the packaged ``default``; ``--runs`` adds any run
directories (part B's robust recipes). Each model's suite runs in-process through
``run_robustness``, as ``cnnlab robustness RUN`` runs it, with its results written to
``--work/<name>/`` (never over a run's own report).

Figures: per model the mean corruption accuracy (literature: a plain MNIST CNN about 91 %),
mCE against the packaged default, the lowest accuracy at a shift's middle severity, robust
accuracy under each attack, AutoAttack at L-inf 0.3 (on ``--autoattack-images``), the OOD
AUROC (target >= 0.95), and the suite's seconds (target <= 300 on 2 cores). The first run
also makes the MNIST-C cache (``corruptions_generate_s``); later runs read it.

Latency: ``Model.predict`` at batch 1 on an MNIST-form image, the median of ``--latency-runs``
calls, against the same call with the confidence/energy/flag computation taken out (the
probabilities alone, as before); the extra share is the target's "<= 1 %".

    python benchmarks/bench_robustness.py                  # the full suite, both models
    python benchmarks/bench_robustness.py --runs runs/robust --images 1000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine


def _latency(model: Any, runs: int) -> dict[str, float]:
    """Batch-1 predict with and without the scores, interleaved so load drifts hit both."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from cnnlab.inference.ood import confidence_energy

    x = torch.zeros(1, *model.input_spec.shape, dtype=torch.uint8)
    x[0, :, 8:20, 12:16] = 255

    def without_scores() -> None:
        # Model.predict as it was before the scores: probabilities, argmax, the record
        probs = F.softmax(model.logits(x), dim=1)
        for row in probs.tolist():
            idx = int(np.argmax(row))
            _ = (model.classes[idx], idx, dict(zip(model.classes, row, strict=True)))

    with_scores, plain, scores_only = [], [], []
    logits = model.logits(x).numpy()
    for _ in range(20):
        model.predict(x)
        without_scores()
    for _ in range(runs):
        t0 = time.perf_counter()
        model.predict(x)
        t1 = time.perf_counter()
        without_scores()
        t2 = time.perf_counter()
        confidence_energy(logits)
        t3 = time.perf_counter()
        with_scores.append(t1 - t0)
        plain.append(t2 - t1)
        scores_only.append(t3 - t2)
    a, b = statistics.median(with_scores), statistics.median(plain)
    s = statistics.median(scores_only)
    return {"predict_ms_p50": round(a * 1000, 4), "predict_without_scores_ms_p50":
            round(b * 1000, 4), "scores_only_ms_p50": round(s * 1000, 5),
            "extra_share_measured": round(a / b - 1, 4), "scores_share_of_predict":
            round(s / b, 5), "runs": runs}


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"clean_accuracy": result["clean_accuracy"],
                           "seconds": result["seconds"]}
    if "corruptions" in result:
        c = result["corruptions"]
        out["corruptions"] = {"mean_accuracy": c["mean_accuracy"], "mce": c.get("mce"),
                              "reference": c.get("reference", {}).get("model"),
                              "accuracy": c["accuracy"],
                              "generate_or_read_s": c["generate_or_read_s"]}
    if "shifts" in result:
        s = result["shifts"]
        out["shifts"] = {"page_accuracy": s["page_accuracy"],
                         "middle_severity": s["middle_severity"],
                         "min_middle_severity": s["min_middle_severity"],
                         "curves": {k: v["accuracy"] for k, v in s["curves"].items()}}
    if "adversarial" in result:
        a = result["adversarial"]
        out["adversarial"] = {
            "curves": {k: dict(zip([str(e) for e in v["eps"]], v["accuracy"], strict=True))
                       for k, v in a["curves"].items()},
            "images": {k: v["images"] for k, v in a["curves"].items()},
            "autoattack": a.get("autoattack"), "checks_pass": a["checks"]["pass"],
            "checks": a["checks"]}
    if "ood" in result:
        o = result["ood"]
        out["ood"] = {"auroc_confidence": o["auroc"]["confidence"],
                      "auroc_energy": o["auroc"]["energy"], "threshold": o["threshold"],
                      "digits_flagged": o["digits_flagged"], "flagged": o["flagged"],
                      "refused": o["refused"], "validation": o["validation"]}
    return out


def _shown(path: str | None) -> str | None:
    """A checkpoint's path as the JSON shows it: relative to the repository when inside it."""
    if path is None:
        return None
    try:
        return str(Path(path).resolve().relative_to(Path(__file__).resolve().parents[1]))
    except ValueError:
        return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--fast", default="runs/fast", help="the fast recipe's run (default: "
                   "runs/fast; trained there when absent)")
    p.add_argument("--runs", nargs="*", default=[], help="more run directories to measure")
    p.add_argument("--no-default", action="store_true", help="leave the packaged model out")
    p.add_argument("--no-fast", action="store_true", help="leave the fast recipe out")
    p.add_argument("--suite", default="corruptions,shifts,adversarial,ood")
    p.add_argument("--autoattack-images", type=int, default=100)
    p.add_argument("--shift-images", type=int, default=200,
                   help="the shifts' digits (34 pages each; default 200)")
    p.add_argument("--shift-spread", action="store_true",
                   help="the shifts' digits spread evenly over the images, not the first")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--work", default="runs/bench-robustness")
    p.add_argument("--latency-runs", type=int, default=2000)
    args = p.parse_args()

    from cnnlab.cli.main import _tune_malloc

    _tune_malloc()  # as the cnnlab command runs
    import torch

    from cnnlab.api import load
    from cnnlab.robustness import RobustnessSettings, run_robustness

    models: dict[str, str] = {}
    fast = Path(args.fast)
    if not args.no_fast:
        if not (fast / "model.pt").is_file():
            from cnnlab.config import resolve_config
            from cnnlab.training.loop import fit

            fit(resolve_config({"data": {"data_dir": args.data_dir}}, recipe="fast"),
                out_dir=fast, overwrite=True, progress=False)
        models["fast"] = str(fast)
    if not args.no_default:
        models["default"] = "default"
    for run in args.runs:
        models[Path(run).name] = run
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    for name, path in models.items():
        model = load(path, engine="torch")
        settings = RobustnessSettings(suites=args.suite.split(","), images=args.images,
                                      autoattack_images=args.autoattack_images,
                                      shift_images=args.shift_images,
                                      shift_spread=args.shift_spread,
                                      data_dir=args.data_dir)
        t0 = time.perf_counter()
        result = run_robustness(model, settings, out_dir=Path(args.work) / name)
        results[name] = {"checkpoint": _shown(model.path), **_summary(result),
                         "wall_s": round(time.perf_counter() - t0, 1),
                         "loadavg_after": [round(v, 2) for v in os.getloadavg()]}
        if name == "default":
            results[name]["latency"] = _latency(model, args.latency_runs)
    print(json.dumps({
        "benchmark": "robustness", "images": args.images, "suite": args.suite,
        "autoattack_images": args.autoattack_images, "shift_images": args.shift_images,
        "shift_spread": args.shift_spread,
        "targets": {"suite_s_on_2_cores": 300, "ood_auroc": 0.95,
                    "extra_latency_share": 0.01,
                    "literature_plain_cnn_mnist_c_mean_accuracy": 0.91},
        "models": results, "machine": machine(), "torch_threads": torch.get_num_threads(),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()]}, indent=2))


if __name__ == "__main__":
    main()
