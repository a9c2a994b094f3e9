"""The memory layout the adversarial attacks run the model in on the CPU; prints JSON.

``cnnlab robustness`` wraps the model for ART (``art_classifier``): on the CPU it gives the
attacks a channels_last copy of the model. This times, for each model, the two layouts
interleaved in one process (so a noisy neighbour slows both alike): PGD-10 (forward and
backward) and Square with ``--square-queries`` queries (forward only) on the first
``--images`` MNIST test digits at L-inf 0.3, each the median of ``--repeats`` runs, and the
ratio contiguous / channels_last (above 1: channels_last is faster). The attacks' results
should agree between the layouts (the same images fooled, up to a rounding-level difference
in a logit): ``fooled_agreement`` is the share of images on which they do.

Models: the packaged ``default`` and any ``--runs``; ``--families`` adds untrained registry
models at their default sizes (the layout's speed does not depend on the weights).

    python benchmarks/bench_attack_layout.py
    python benchmarks/bench_attack_layout.py --runs runs/adv-full --families convnet,vit,lenet5
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import machine  # noqa: E402
from cnnlab.data import load_dataset  # noqa: E402
from cnnlab.inference import load_model  # noqa: E402
from cnnlab.models import create_model  # noqa: E402
from cnnlab.robustness.adversarial import PixelSpaceModel  # noqa: E402


def _estimator(classifier: torch.nn.Module, mean: Any, std: Any, channels_last: bool) -> Any:
    from art.estimators.classification import PyTorchClassifier  # type: ignore[import-untyped]

    net = copy.deepcopy(classifier).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    wrapped = PixelSpaceModel(net, mean, std, channels_last=channels_last).eval()
    return PyTorchClassifier(wrapped, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                             nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")


def _attacks(est: Any, queries: int) -> dict[str, Any]:
    from art.attacks.evasion import ProjectedGradientDescent, SquareAttack

    return {"pgd-10": ProjectedGradientDescent(est, norm=np.inf, eps=0.3, eps_step=0.075,
                                               max_iter=10, batch_size=500, verbose=False),
            "square": SquareAttack(est, norm=np.inf, eps=0.3, max_iter=queries, nb_restarts=1,
                                   batch_size=500, verbose=False)}


def measure(name: str, classifier: torch.nn.Module, mean: Any, std: Any, x: np.ndarray,
            y: np.ndarray, repeats: int, queries: int) -> dict[str, Any]:
    ests = {layout: _estimator(classifier, mean, std, layout == "channels_last")
            for layout in ("contiguous", "channels_last")}
    times: dict[str, dict[str, list[float]]] = {a: {k: [] for k in ests} for a in
                                                ("pgd-10", "square")}
    fooled: dict[str, dict[str, np.ndarray]] = {a: {} for a in times}
    for _ in range(repeats):
        for layout, est in ests.items():
            for attack_name, attack in _attacks(est, queries).items():
                np.random.seed(0)
                t0 = time.perf_counter()
                adv = attack.generate(x, y=y)
                times[attack_name][layout].append(time.perf_counter() - t0)
                fooled[attack_name][layout] = est.predict(adv).argmax(1) != y
    row: dict[str, Any] = {"model": name}
    for attack_name, by_layout in times.items():
        med = {k: statistics.median(v) for k, v in by_layout.items()}
        agree = float((fooled[attack_name]["contiguous"]
                       == fooled[attack_name]["channels_last"]).mean())
        row[attack_name] = {"seconds_median": {k: round(v, 3) for k, v in med.items()},
                            "ratio_contiguous_over_channels_last":
                                round(med["contiguous"] / med["channels_last"], 3),
                            "fooled_agreement": agree}
    print(json.dumps(row), file=sys.stderr)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="*", default=[], help="run directories to time as well")
    p.add_argument("--families", default="",
                   help="comma-separated registry models to time untrained (default: none)")
    p.add_argument("--images", type=int, default=500, help="test digits (default: 500)")
    p.add_argument("--repeats", type=int, default=3, help="runs per layout (default: 3)")
    p.add_argument("--square-queries", type=int, default=100,
                   help="Square's queries (default: 100)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--data-dir", default=str(ROOT / "data" / "mnist"))
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset("mnist", "test", data_dir=args.data_dir)
    x = (ds.images[:args.images].float() / 255.0).numpy()
    y = ds.targets[:args.images].numpy()
    rows = []
    for run in ["default", *args.runs]:
        model = load_model(run)
        spec = model.input_spec
        rows.append(measure(run, model.classifier, spec.mean, spec.std, x, y, args.repeats,
                            args.square_queries))
    for family in filter(None, args.families.split(",")):
        torch.manual_seed(0)
        rows.append(measure(f"{family} (untrained)", create_model(family), (0.1307,),
                            (0.3081,), x, y, args.repeats, args.square_queries))
    out = {"benchmark": "attack_layout", "machine": machine(), "images": args.images,
           "repeats": args.repeats, "square_queries": args.square_queries, "models": rows}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
