"""Few-shot defaults chosen on validation data: a sweep of fine-tuning's epochs, early stopping
and augmentation at K = 10 images per class, from the packaged default model; prints JSON.

Datasets: MNIST test digits drawn dark on light paper at 64x64 with a little blur and noise
(``--mnist-images`` of them), and scikit-learn's 1,797 digits as ``cnnlab data export
sklearn-digits`` writes them. Each is split once (stratified, seed 0) into a ``dev`` half
and a ``report`` half. Every run fine-tunes on K images per class drawn from ``dev`` (a
seeded draw, ``--seeds`` of them) and is scored on the rest of ``dev``: that is the
validation slice, and it alone chooses. The ``report`` half is read once, by the chosen
setting's runs, for the test accuracy reported.

Settings, one factor at a time from the current defaults (``FinetuneSettings``: epochs
auto = about 300 optimiser steps, augmentation on, early stopping 10 epochs, and no
validation slice below 30 images per class, so at K = 10 early stopping has nothing to
steer by):

- ``default``; ``epochs=25`` and ``epochs=150`` (the auto rule gives 75 at 100 images);
  ``augment=off``;
- ``val=0.2 early_stopping=10`` (a validation slice of the shots steers early stopping:
  what ``--val-fraction 0.2`` does) and ``val=0.2 early_stopping=off`` (the same slice only
  picks the best epoch).

The chosen setting is the one with the highest mean validation accuracy over both datasets
and all seeds. Everything goes through the code ``cnnlab finetune`` runs.

``--table`` measures the README's transfer table instead: the ``fast`` recipe's MNIST model
(trained here unless ``--source`` names one) zero-shot on the 1,797 sklearn digits, then
fine-tuned and, as the baseline, trained from scratch on K = 1, 5, 10 images per class (the
rest is the test split), over ``--seeds`` draws; at the largest K the other strategies too.

    python benchmarks/bench_fewshot.py             # the sweep: about 5 minutes on 2 cores
    python benchmarks/bench_fewshot.py --table --seeds 5     # about 3 minutes
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import digits_and_mnist_model, machine
from bench_data_path import write_folder

SHOTS = 10
SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "epochs=25": {"epochs": 25},
    "epochs=150": {"epochs": 150},
    "augment=off": {"augment": False},
    "val=0.2 early_stopping=10": {"val_fraction": 0.2, "early_stopping": 10},
    "val=0.2 early_stopping=off": {"val_fraction": 0.2, "early_stopping": 0},
}


def split_dev_report(folder: Path, out: Path) -> dict[str, Path]:
    """``folder`` copied into ``out/dev`` and ``out/report``: a stratified half each (seed 0,
    whatever the draw), so no draw ever trains or chooses on a report image."""
    from cnnlab.data import list_image_folder, stratified_split

    parts = {"dev": out / "dev", "report": out / "report"}
    if all(p.is_dir() for p in parts.values()):
        return parts
    listing = list_image_folder(folder)
    dev_idx, report_idx = stratified_split(np.asarray(listing.targets), 0.5, 0)
    for name, idx in (("dev", dev_idx), ("report", report_idx)):
        tmp = out / f".{name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        for i in idx:
            rel = listing.paths[int(i)]
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(listing.root / rel, tmp / rel)
        tmp.rename(parts[name])
    return parts


def build_datasets(work: Path, data_dir: str, mnist_images: int) -> dict[str, dict[str, Path]]:
    from cnnlab.data import load_dataset
    from cnnlab.data.export import export_dataset

    test = load_dataset("mnist", "test", data_dir=data_dir, progress=False)
    dark = write_folder(work / "mnist-dark-64", test.images[:mnist_images, 0].numpy(),
                        test.targets[:mnist_images].numpy(), 64, fill=0.8, blur=0.8,
                        noise=5.0)
    sklearn = work / "sklearn-digits"
    if not sklearn.is_dir():
        export_dataset("sklearn-digits", sklearn, progress=False)
    return {"mnist-dark-64": split_dev_report(dark, work / "split-mnist-dark-64"),
            "sklearn-digits": split_dev_report(sklearn, work / "split-sklearn-digits")}


def run_setting(dev: Path, out: Path, seed: int, setting: dict[str, Any], threads: int
                ) -> dict[str, Any]:
    from cnnlab.training.finetune import FinetuneSettings, finetune

    t0 = time.perf_counter()
    r = finetune(FinetuneSettings(source="default", train_dir=str(dev), out=str(out),
                                  shots=SHOTS, seed=seed, threads=threads, overwrite=True,
                                  progress=False, **setting))
    m = r.metrics
    return {"seed": seed,
            # finetune's "test" split is the rest of dev: the validation slice of this sweep
            "val_accuracy": round(m["test_accuracy"], 4), "val_images": m["test_images"],
            "train_images": r.info["train_images"], "steer_images": r.info["val_images"],
            "epochs": r.info["epochs"], "epochs_run": m.get("epochs_run"),
            "best_epoch": m.get("best_epoch"), "stopped_early": m.get("stopped_early"),
            "train_time_s": m.get("train_time_s"), "wall_s": round(time.perf_counter() - t0, 1),
            "run": str(out)}


def report_accuracy(run: str, report: Path) -> dict[str, Any]:
    """The test accuracy of ``run`` on the report half, as ``cnnlab evaluate --data-dir``
    computes it (an external folder: all of it)."""
    from cnnlab import load
    from cnnlab.training.data import load_split

    model = load(run, engine="torch")
    ds, src = load_split(model, dataset=str(report))
    assert src.origin == "external" and src.split == "all"
    correct = (model.logits(ds.images).argmax(1) == ds.targets).float().mean().item()
    return {"test_accuracy": round(correct, 4), "test_images": len(ds)}


def stats(values: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.mean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "min": round(min(values), 4)}


def transfer_table(args: argparse.Namespace) -> None:
    """The README's table: zero-shot, fine-tuned and from scratch at K = 1, 5, 10."""
    from cnnlab import load
    from cnnlab.training.data import load_split
    from cnnlab.training.finetune import FinetuneSettings, finetune

    work = Path(args.work)
    folder, mnist = digits_and_mnist_model(work, str(Path(args.data_dir).parent))
    source = args.source or str(mnist)
    model = load(source, engine="torch")
    ds, _ = load_split(model, dataset=str(folder))
    zero_shot = (model.logits(ds.images).argmax(1) == ds.targets).float().mean().item()

    def run(shots: int, seed: int, **kw: Any) -> dict[str, Any]:
        name = "-".join([f"k{shots}", f"s{seed}", *(f"{k}{v}" for k, v in kw.items())])
        t0 = time.perf_counter()
        r = finetune(FinetuneSettings(source=source, train_dir=str(folder),
                                      out=str(work / name), shots=shots, seed=seed,
                                      threads=args.threads, overwrite=True, progress=False,
                                      **kw))
        return {"test_accuracy": r.metrics["test_accuracy"], "wall_s": time.perf_counter() - t0,
                "test_images": r.info["test_images"]}

    def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
        accs = [r["test_accuracy"] for r in runs]
        return {**stats(accs), "max": round(max(accs), 4),
                "median_wall_s": round(statistics.median(r["wall_s"] for r in runs), 2),
                "test_images": runs[0]["test_images"]}

    seeds = range(args.seeds)
    shots = [int(x) for x in args.shots.split(",")]
    table: dict[str, dict[str, Any]] = {}
    for k in shots:
        table[f"K={k}"] = {"finetune": summary([run(k, s) for s in seeds]),
                           "scratch": summary([run(k, s, scratch=True) for s in seeds])}
    for strategy in ("linear", "gradual", "discriminative"):
        table[f"K={max(shots)}"][strategy] = summary([run(max(shots), s, strategy=strategy)
                                                      for s in seeds])
    print(json.dumps({
        "benchmark": "bench_fewshot --table", "machine": machine(), "source": source,
        "source_mnist_test_accuracy": model.metrics.get("test_accuracy"),
        "dataset": "sklearn-digits (1,797 images, MNIST form)", "seeds": args.seeds,
        "zero_shot_accuracy": round(zero_shot, 4), "results": table,
    }, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="runs/bench-fewshot", help="scratch directory")
    p.add_argument("--data-dir", default="data/mnist", help="the MNIST files")
    p.add_argument("--mnist-images", type=int, default=1000,
                   help="MNIST test digits in the dark-on-light folder (default: 1000)")
    p.add_argument("--seeds", type=int, default=3, help="draws of the K shots (default: 3)")
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help="which settings to sweep, comma-separated (default: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--table", action="store_true",
                   help="measure the README's transfer table instead of the sweep")
    p.add_argument("--source", default=None,
                   help="--table: the MNIST model (default: train the fast recipe)")
    p.add_argument("--shots", default="1,5,10", help="--table: K values (default: 1,5,10)")
    args = p.parse_args()
    if args.table:
        transfer_table(args)
        return

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    datasets = build_datasets(work, str(Path(args.data_dir).resolve()), args.mnist_images)
    names = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        raise SystemExit(f"unknown settings {unknown}; known: {', '.join(SETTINGS)}")

    t0 = time.perf_counter()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in names}
    for data, parts in datasets.items():
        for name in names:
            tag = name.replace(" ", "-").replace("=", "")
            runs[name][data] = [run_setting(parts["dev"], work / "runs" / data / f"{tag}-s{s}",
                                            s, SETTINGS[name], args.threads)
                                for s in range(args.seeds)]
    sweep_s = time.perf_counter() - t0

    table: dict[str, Any] = {}
    for name in names:
        pooled = [r["val_accuracy"] for rows in runs[name].values() for r in rows]
        table[name] = {"setting": SETTINGS[name], "val_accuracy": stats(pooled),
                       "per_dataset": {data: {"val_accuracy": stats([r["val_accuracy"]
                                                                     for r in rows]),
                                              "runs": rows}
                                       for data, rows in runs[name].items()}}
    chosen = max(names, key=lambda n: table[n]["val_accuracy"]["mean"])

    # the chosen setting's runs, read once on the report half
    test = {data: [report_accuracy(r["run"], datasets[data]["report"]) | {"seed": r["seed"]}
                   for r in runs[chosen][data]] for data in datasets}
    print(json.dumps({
        "benchmark": "bench_fewshot", "machine": machine(), "source": "default",
        "shots": SHOTS, "seeds": args.seeds,
        "datasets": {data: {part: sum(1 for _ in path.rglob("*.png"))
                            for part, path in parts.items()}
                     for data, parts in datasets.items()},
        "protocol": "settings scored on the rest of dev after the K-shot draw (validation); "
                    "the chosen setting's runs read the report half once",
        "sweep": table,
        "chosen": chosen,
        "chosen_val_accuracy": table[chosen]["val_accuracy"],
        "chosen_test": {data: {"accuracy": stats([t["test_accuracy"] for t in rows]),
                               "test_images": rows[0]["test_images"], "runs": rows}
                        for data, rows in test.items()},
        "sweep_s": round(sweep_s, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
