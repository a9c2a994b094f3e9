"""One data path, measured (issue 12): ``evaluate`` and ``predict`` agree image by image for
every model kind, and the default model fine-tuned on 10 digits per class reads the rest of
the folder as well through ``predict``, ``evaluate`` and the service; prints JSON.

Folders, built under ``--work`` from data at hand, dark ink on light paper:

- ``sklearn-digits-64``: scikit-learn's 1,797 8x8 digits drawn at 64x64 on 60 % of the page
  (a little blur and noise);
- ``mnist-64``, ``mnist-96``: the first ``--mnist-images`` MNIST test digits drawn at 64x64
  and 96x96, with a Gaussian blur and noise.

Model kinds: the packaged ``default``; ``fast``, the fast recipe's convnet trained for one
epoch on ``--fast-limit`` MNIST training images; ``finetuned``, the default fine-tuned on 10
images per class of ``mnist-64`` (draw 0 of the few-shot part: its figures on ``mnist-64``
include its 100 training images); ``rgb``, paper-cnn-tiny trained from scratch on an RGB
folder (MNIST training digits drawn in colour at 32x32: ``resize`` preprocessing).

Agreement, per folder and model: ``cnnlab evaluate --data-dir FOLDER --json`` gives the
accuracy and the confusion matrix; ``cnnlab predict MODEL FOLDER --json`` gives each file's
label; evaluate's per-image labels are what it computes (``load_split`` on the folder, then
``model.logits``), checked against its confusion matrix. ``agreement`` is the share of images
on which predict's label is evaluate's.

Few-shot, per draw (``--draws`` seeds): ``cnnlab finetune default --train-dir mnist-64
--shots 10``; the rest of the folder (``splits.json``'s test split) is read through ``cnnlab
evaluate RUN``, ``cnnlab predict RUN FILES`` and ``POST /v1/predict``; mean and minimum over
the draws. Everything runs in-process through ``cnnlab.cli.main.main`` and the service's app.

    python benchmarks/bench_data_path.py          # about 6 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from _common import machine

SHOTS = 10


def cli(*argv: str) -> tuple[int, str, str]:
    """``cnnlab ARGV`` in-process: (exit status, stdout, stderr)."""
    from cnnlab.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def checked(*argv: str) -> str:
    rc, out, err = cli(*argv)
    if rc != 0:
        raise SystemExit(f"cnnlab {' '.join(map(str, argv[:3]))} ... failed ({rc}): {err}")
    return out


# --- folders ------------------------------------------------------------------------------------

def render_digit(ink: np.ndarray, size: int, *, fill: float, blur: float, noise: float,
                 seed: int, tint: tuple[int, int, int] | None = None) -> Image.Image:
    """A digit (any size, ink high) drawn dark on light paper on a ``size`` x ``size`` page
    (``fill`` of its side), blurred and noisy; in ``tint`` (RGB) when given, else grey."""
    x = np.asarray(ink, dtype=np.float64)
    x = (x / max(float(x.max()), 1e-9) * 255).round().astype(np.uint8)
    side = round(size * fill)
    page = Image.new("L", (size, size), 0)
    page.paste(Image.fromarray(x).resize((side, side), Image.Resampling.BILINEAR),
               ((size - side) // 2, (size - side) // 2))
    if blur > 0:
        page = page.filter(ImageFilter.GaussianBlur(blur))
    v = np.asarray(page, dtype=np.float64) / 255.0
    rng = np.random.default_rng(seed)
    if tint is None:
        grey = 235 - 210 * v + rng.normal(0, noise, v.shape)
        return Image.fromarray(np.clip(grey, 0, 255).round().astype(np.uint8), "L")
    rgb = np.stack([235 - (235 - t) * v for t in tint], axis=2) + rng.normal(0, noise,
                                                                           (*v.shape, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).round().astype(np.uint8), "RGB")


def write_folder(root: Path, images: np.ndarray, targets: np.ndarray, size: int, *,
                 fill: float, blur: float, noise: float, colour: bool = False) -> Path:
    """``root/<digit>/<index>.png`` for every image, unless the folder is complete already."""
    if root.is_dir() and sum(1 for _ in root.rglob("*.png")) == len(images):
        return root
    shutil.rmtree(root, ignore_errors=True)
    tints = [(200, 30, 30), (30, 140, 30), (30, 60, 200), (150, 60, 170), (20, 20, 20)]
    for i, (ink, target) in enumerate(zip(images, targets, strict=True)):
        d = root / str(int(target))
        d.mkdir(parents=True, exist_ok=True)
        tint = tints[i % len(tints)] if colour else None
        render_digit(ink, size, fill=fill, blur=blur, noise=noise, seed=i, tint=tint).save(
            d / f"{i:05d}.png")
    return root


def build_folders(work: Path, data_dir: str, mnist_images: int, sklearn_images: int,
                  rgb_images: int) -> tuple[dict[str, Path], Path]:
    from sklearn.datasets import load_digits

    from cnnlab.data import load_dataset

    digits = load_digits()
    test = load_dataset("mnist", "test", data_dir=data_dir, progress=False)
    train = load_dataset("mnist", "train", data_dir=data_dir, progress=False)
    mi, mt = test.images[:mnist_images, 0].numpy(), test.targets[:mnist_images].numpy()
    # sklearn's ink fills its 8x8 frame, so it gets a margin of paper (at 80 % of the page,
    # to_mnist_form refuses some as blank: see the xfail in tests/test_one_data_path.py);
    # MNIST's 28x28 images carry their own 4-pixel margin
    folders = {
        "sklearn-digits-64": write_folder(work / "sklearn-digits-64",
                                          digits.images[:sklearn_images or None],
                                          digits.target[:sklearn_images or None], 64,
                                          fill=0.6, blur=0.8, noise=4.0),
        "mnist-64": write_folder(work / "mnist-64", mi, mt, 64, fill=0.8, blur=0.8, noise=5.0),
        "mnist-96": write_folder(work / "mnist-96", mi, mt, 96, fill=0.8, blur=1.2, noise=5.0),
    }
    rgb = write_folder(work / "rgb-train", train.images[:rgb_images, 0].numpy(),
                       train.targets[:rgb_images].numpy(), 32, fill=0.8, blur=0.5, noise=4.0,
                       colour=True)
    return folders, rgb


# --- agreement ----------------------------------------------------------------------------------

def _confusion(targets: list[int], preds: list[int], n: int) -> list[list[int]]:
    cm = np.zeros((n, n), dtype=np.int64)
    for t, p in zip(targets, preds, strict=True):
        cm[t, p] += 1
    return cm.tolist()


def _files(model: Any, folder: Path) -> tuple[list[str], list[int]] | None:
    """The files (and classes) evaluate reads of ``folder`` when it is the folder ``model``
    was trained on: its test split, as ``splits.json`` lists it; None for other folders."""
    from cnnlab.training.data import read_manifest

    manifest = read_manifest(Path(model.path).parent) if model.path else None
    if manifest is None or Path(manifest.get("root", "")).resolve() != folder.resolve():
        return None
    test = manifest["splits"]["test"]
    return ([str(Path(test["root"]) / f["path"]) for f in test["files"]],
            [model.classes.index(f["class"]) for f in test["files"]])


def agreement(model_path: str, folder: Path, engine: str, cache: dict[Any, Any]
              ) -> dict[str, Any]:
    from cnnlab import load
    from cnnlab.data import list_image_folder
    from cnnlab.training.data import load_split

    ev = json.loads(checked("evaluate", model_path, "--data-dir", folder, "--json",
                            "--no-report", "--engine", engine, "-q"))
    rc, out, _ = cli("predict", model_path, folder, "--json", "--engine", engine, "-q")
    lines = {line["path"]: line for line in map(json.loads, out.splitlines())}
    model = load(model_path, engine=engine)
    classes = list(model.classes)
    own = _files(model, folder)
    if own is not None:  # the model's own folder: evaluate reads its test split
        paths, targets = own
    else:
        listing = list_image_folder(folder)  # load_split's order
        assert listing.classes == classes
        paths, targets = [str(listing.root / rel) for rel in listing.paths], listing.targets
    # evaluate's per-image labels: what it computes (load_split, then the model's logits); the
    # split depends only on the preprocessing, so models that share one share the read
    key = (str(folder), json.dumps(model.preprocessing, sort_keys=True),
           model_path if own is not None else None)
    if key not in cache:
        cache[key] = load_split(model, dataset=str(folder))[0]
    ds = cache[key]
    assert ds.targets.tolist() == targets
    evaluated = model.logits(ds.images).argmax(1).tolist()
    refused = [p for p in paths if "label" not in lines.get(p, {})]
    predicted = [classes.index(lines[p]["label"]) if p not in refused else -1 for p in paths]
    same = sum(a == b for a, b in zip(evaluated, predicted, strict=True))
    kept = [i for i, p in enumerate(paths) if p not in refused]
    return {
        "images": len(paths),
        "split": "test split (splits.json)" if own is not None else "all",
        "evaluate_accuracy": round(ev["accuracy"], 4),
        "predict_accuracy": round(sum(predicted[i] == targets[i] for i in kept) / len(paths), 4),
        "agreement": round(same / len(paths), 4),
        "disagreements": len(paths) - same,
        "predict_refused": len(refused),
        "predict_exit_status": rc,
        # evaluate's own confusion matrix is the one its per-image labels make, and predict's
        "evaluate_matrix_is_its_labels": ev["confusion_matrix"] == _confusion(
            targets, evaluated, len(classes)),
        "predict_matrix_is_evaluate_matrix": ev["confusion_matrix"] == _confusion(
            [targets[i] for i in kept], [predicted[i] for i in kept], len(classes)),
    }


# --- few-shot -----------------------------------------------------------------------------------

def serve_labels(run: Path, paths: list[str], work: Path) -> list[str]:
    from fastapi.testclient import TestClient

    from cnnlab.serve.app import ServeSettings, create_app

    db = work / f"{run.name}-feedback.db"
    db.unlink(missing_ok=True)
    app = create_app(ServeSettings(checkpoint=str(run), engine="torch",
                                   feedback_url=f"sqlite:///{db}"))
    labels = []
    with TestClient(app) as client:
        for path in paths:
            r = client.post("/v1/predict", files={"file": (Path(path).name,
                                                            Path(path).read_bytes(),
                                                            "image/png")})
            labels.append(r.json()["label"] if r.status_code == 200
                          else f"error {r.status_code}")
    return labels


def few_shot_draw(folder: Path, seed: int, work: Path, engine: str, epochs: int
                  ) -> dict[str, Any]:
    run = work / f"fewshot-{folder.name}-s{seed}"
    t0 = time.perf_counter()
    ft = json.loads(checked("finetune", "default", "--train-dir", folder, "--shots", SHOTS,
                            "--seed", seed, "--epochs", epochs, "--out", run, "--overwrite",
                            "--no-report", "--json", "-q"))
    train_s = time.perf_counter() - t0
    manifest = json.loads((run / "splits.json").read_text())
    test = manifest["splits"]["test"]
    paths = [str(Path(test["root"]) / f["path"]) for f in test["files"]]
    truth = [f["class"] for f in test["files"]]
    ev = json.loads(checked("evaluate", run, "--json", "--no-report", "--engine", engine,
                            "-q"))
    rc, out, _ = cli("predict", run, *paths, "--json", "--engine", engine, "-q")
    lines = {line["path"]: line.get("label") for line in map(json.loads, out.splitlines())}
    predicted = [lines.get(p) for p in paths]
    served = serve_labels(run, paths, work)

    def acc(labels: list[str | None]) -> float:
        return round(sum(a == b for a, b in zip(labels, truth, strict=True)) / len(truth), 4)

    return {"seed": seed, "train_images": ft["train_images"], "test_images": len(paths),
            "evaluate_images": ev["samples"], "epochs": ft["epochs"],
            "preprocessing": ft["preprocessing"]["kind"],
            "finetune_test_accuracy": round(ft["metrics"]["test_accuracy"], 4),
            "evaluate_accuracy": round(ev["accuracy"], 4), "predict_accuracy": acc(predicted),
            "service_accuracy": acc(served),
            "predict_service_agreement": round(sum(
                a == b for a, b in zip(predicted, served, strict=True)) / len(paths), 4),
            "predict_exit_status": rc, "wall_s": round(time.perf_counter() - t0, 1),
            "finetune_wall_s": round(train_s, 1)}


def summary(draws: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("evaluate_accuracy", "predict_accuracy", "service_accuracy"):
        values = [d[key] for d in draws]
        out[key] = {"mean": round(statistics.mean(values), 4), "min": round(min(values), 4)}
    out["meets_98_percent"] = all(v["min"] >= 0.98 for v in out.values())
    return out


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="runs/bench-data-path", help="scratch directory")
    p.add_argument("--data-dir", default="data/mnist", help="the MNIST files")
    p.add_argument("--mnist-images", type=int, default=1000,
                   help="MNIST test digits per drawn folder (default: 1000)")
    p.add_argument("--fast-limit", type=int, default=3000,
                   help="MNIST training images for the fast model (default: 3000)")
    p.add_argument("--rgb-images", type=int, default=2000,
                   help="colour digits the rgb model trains on (default: 2000)")
    p.add_argument("--sklearn-images", type=int, default=0,
                   help="sklearn digits in the drawn folder (default: 0 = all 1,797)")
    p.add_argument("--draws", type=int, default=5, help="few-shot draws (default: 5)")
    p.add_argument("--epochs", type=int, default=0,
                   help="few-shot epochs (default: 0 = finetune's auto rule; set it only for a "
                        "quick smoke run)")
    p.add_argument("--engine", default="torch", help="engine for evaluate and predict "
                   "(default: torch; the service runs torch)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work).resolve()
    args.data_dir = str(Path(args.data_dir).resolve())
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    folders, rgb_folder = build_folders(work, args.data_dir, args.mnist_images,
                                        args.sklearn_images, args.rgb_images)
    timings = {"folders_s": round(time.perf_counter() - t0, 1)}

    t0 = time.perf_counter()
    draws = [few_shot_draw(folders["mnist-64"], s, work, args.engine, args.epochs)
             for s in range(args.draws)]
    timings["few_shot_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    fast = work / "fast"
    fast_metrics = json.loads(checked(
        "train", "--recipe", "fast", "--data-dir", args.data_dir, "--limit", args.fast_limit,
        "--epochs", 1, "--threads", args.threads, "--out", fast, "--overwrite", "--no-report",
        "--json", "-q"))
    rgb = work / "rgb"
    rgb_metrics = json.loads(checked(
        "train", "--dataset", rgb_folder, "--model", "paper-cnn-tiny", "--epochs", 3,
        "--threads", args.threads, "--out", rgb, "--overwrite", "--no-report", "--json", "-q"))
    timings["train_s"] = round(time.perf_counter() - t0, 1)
    models = {"default": "default", "fast": str(fast),
              "finetuned": str(work / "fewshot-mnist-64-s0"), "rgb": str(rgb)}

    t0 = time.perf_counter()
    cache: dict[Any, Any] = {}
    table = {folder: {kind: agreement(path, folders[folder], args.engine, cache)
                      for kind, path in models.items()} for folder in folders}
    timings["agreement_s"] = round(time.perf_counter() - t0, 1)

    every = [row for rows in table.values() for row in rows.values()]
    print(json.dumps({
        "benchmark": "bench_data_path", "machine": machine(), "git_commit": _git_commit(),
        "engine": args.engine,
        "models": {"default": "packaged default model",
                   "fast": f"fast recipe, 1 epoch on {args.fast_limit} MNIST training images "
                           f"(MNIST test accuracy {fast_metrics['test_accuracy']:.4f})",
                   "finetuned": "default fine-tuned on 10 images per class of mnist-64 "
                                "(few-shot draw 0)",
                   "rgb": f"paper-cnn-tiny from scratch, 3 epochs on {args.rgb_images} colour "
                          f"digits at 32x32 (resize; its own test accuracy "
                          f"{rgb_metrics['test_accuracy']:.4f})"},
        "agreement": table,
        "agreement_all_100_percent": all(r["agreement"] == 1.0 for r in every),
        "few_shot": {"folder": "mnist-64", "shots": SHOTS, "draws": draws,
                     "summary": summary(draws)},
        "timings": timings,
    }, indent=2))


if __name__ == "__main__":
    main()
