"""The feature cache of the ``linear`` fine-tuning strategy against running the frozen network
every epoch; prints JSON.

Both runs train only the last layer, with the same batch order, optimiser and schedule and no
augmentation (the test suite checks they end with the same weights); the cached run computes
the frozen features once. Sources: the MNIST ``convnet`` of the fast recipe, and AlexNet with
torchvision-format weights at 1x28x28 (random values in the ImageNet file layout: nothing
downloads; the time does not depend on the values). Data: scikit-learn's digits as an image
folder, --shots images per class for training, the rest for testing.

    python benchmarks/bench_feature_cache.py             # about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import digits_and_mnist_model, machine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="runs/bench-feature-cache")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--shots", type=int, default=100)
    p.add_argument("--epochs", type=int, default=20)
    args = p.parse_args()

    import torch

    from cnnlab.models import create_model
    from cnnlab.training.finetune import FinetuneSettings, finetune

    work = Path(args.work)
    folder, mnist = digits_and_mnist_model(work, args.data_dir)
    tmp = Path(tempfile.mkdtemp(prefix="cnnlab-bench-"))
    alexnet = tmp / "alexnet-owt-7be5be79.pth"
    torch.manual_seed(0)
    torch.save(create_model("alexnet", num_classes=1000, input_size=224).state_dict(), alexnet)

    results = {}
    for name, source, size in (("convnet (MNIST model)", str(mnist), 0),
                               ("alexnet 1x28x28", str(alexnet), 28)):
        runs = {}
        for cache in (True, False):
            s = FinetuneSettings(source=source, train_dir=str(folder),
                                 out=str(work / f"{name.split()[0]}-{cache}"), shots=args.shots,
                                 strategy="linear", feature_cache=cache, augment=False,
                                 val_fraction=0.0, epochs=args.epochs, image_size=size,
                                 overwrite=True, progress=False, device="cpu")
            t0 = time.perf_counter()
            r = finetune(s)
            wall = time.perf_counter() - t0
            m = r.metrics
            runs["cached" if cache else "uncached"] = {
                "wall_s": round(wall, 2),
                "feature_s": m.get("feature_time_s", 0.0),
                "head_training_s": m["train_time_s"],
                "per_epoch_s": round(m["train_time_s"] / m["epochs_run"], 4),
                "test_accuracy": m["test_accuracy"],
            }
        c, u = runs["cached"], runs["uncached"]
        results[name] = {
            **runs,
            "speedup_training": round(u["head_training_s"] / (c["feature_s"]
                                                              + c["head_training_s"]), 1),
            "speedup_per_epoch": round(u["per_epoch_s"] / max(c["per_epoch_s"], 1e-9), 1),
            "speedup_wall": round(u["wall_s"] / c["wall_s"], 1),
        }
    alexnet.unlink()
    tmp.rmdir()
    print(json.dumps({"machine": machine(), "shots": args.shots, "epochs": args.epochs,
                      "train_images": 10 * args.shots, "results": results}, indent=2))


if __name__ == "__main__":
    main()
