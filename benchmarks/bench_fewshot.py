"""Few-shot transfer from MNIST to scikit-learn's 8x8 digits; prints JSON.

The MNIST model (the ``fast`` recipe, trained here if --source is not given) is evaluated
zero-shot on all 1,797 sklearn digits, then fine-tuned with K = 1, 5, 10 images per class and,
as the baseline, the same architecture is trained from scratch on the same K images with the
same schedule. Each K is repeated over --seeds draws of the K images; the test split is the
rest of the 1,797 images. At K = 10 the other strategies (linear, gradual, discriminative) run
too. Everything goes through the same code as ``cnnlab finetune``.

    python benchmarks/bench_fewshot.py                  # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _common import digits_and_mnist_model, machine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default=None, help="MNIST run dir (default: train the fast recipe)")
    p.add_argument("--work", default="runs/bench-fewshot", help="scratch directory")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--shots", default="1,5,10")
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args()

    from cnnlab.api import load
    from cnnlab.evaluate.inference import evaluate_loss_accuracy, predict_logits
    from cnnlab.evaluate.report import _load_split
    from cnnlab.finetune import FinetuneSettings, finetune

    work = Path(args.work)
    folder, mnist = digits_and_mnist_model(work, args.data_dir)
    source = args.source or str(mnist)
    model = load(source)
    mnist_test = model.metrics.get("test_accuracy")
    ds, _ = _load_split(model, str(folder), None, "test", False)
    spec = model.input_spec
    _, zero_shot = evaluate_loss_accuracy(
        predict_logits(model.classifier, ds.images, spec.mean, spec.std), ds.targets)

    def run(shots: int, seed: int, **kw: object) -> dict:
        name = "-".join([f"k{shots}", f"s{seed}", *(f"{k}{v}" for k, v in kw.items())])
        s = FinetuneSettings(source=source, train_dir=str(folder), out=str(work / name),
                             shots=shots, seed=seed, overwrite=True, progress=False,
                             **kw)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        r = finetune(s)
        return {"test_accuracy": r.metrics["test_accuracy"], "wall_s": time.perf_counter() - t0,
                "train_time_s": r.metrics["train_time_s"], "test_images": r.info["test_images"]}

    def summary(runs: list[dict]) -> dict:
        accs = [r["test_accuracy"] for r in runs]
        return {"mean": round(statistics.mean(accs), 4),
                "std": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0,
                "min": round(min(accs), 4), "max": round(max(accs), 4),
                "median_wall_s": round(statistics.median(r["wall_s"] for r in runs), 2),
                "test_images": runs[0]["test_images"]}

    seeds = range(args.seeds)
    table: dict[str, dict] = {}
    for k in (int(x) for x in args.shots.split(",")):
        table[f"K={k}"] = {
            "finetune": summary([run(k, s) for s in seeds]),
            "scratch": summary([run(k, s, scratch=True) for s in seeds]),
        }
    k = max(int(x) for x in args.shots.split(","))
    for strategy in ("linear", "gradual", "discriminative"):
        table[f"K={k}"][strategy] = summary([run(k, s, strategy=strategy) for s in seeds])
    print(json.dumps({
        "machine": machine(),
        "source": source, "source_mnist_test_accuracy": mnist_test,
        "dataset": "sklearn-digits (1,797 images, MNIST form)", "seeds": args.seeds,
        "zero_shot_accuracy": round(zero_shot, 4), "results": table,
    }, indent=2))


if __name__ == "__main__":
    main()
