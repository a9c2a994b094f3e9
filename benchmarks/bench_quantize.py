"""FP32 ONNX Runtime and static INT8 against PyTorch eager on MNIST models; prints JSON.

For each model: the PyTorch checkpoint (eager, 2 threads, with the cnnlab command's malloc
settings), its ONNX export and its static INT8
quantisation (512 calibration images), on the 10,000 MNIST test images: accuracy, top-1
agreement, file size, batch-1 latency (p50) and batch-1000 throughput (medians over
interleaved rounds). Models are trained here if missing: the ``fast`` recipe's convnet and the
paper's CNN (1 epoch); the packaged default model (a residual CNN) is measured as it ships.

    python benchmarks/bench_quantize.py            # about 3 minutes on 2 cores; run it alone
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from _common import machine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="runs/bench-quantize")
    p.add_argument("--data-dir", default="data")
    args = p.parse_args()

    from cnnlab.cli.main import _tune_malloc

    _tune_malloc()  # the malloc settings the cnnlab command runs with (README, Results)
    import torch

    from cnnlab.api import load
    from cnnlab.config import resolve_config
    from cnnlab.deploy.quantize import quantize_model
    from cnnlab.training.loop import fit

    work = Path(args.work)
    runs = {"convnet (fast recipe)": (work / "fast", {"recipe": "fast", "layer": {}}),
            "paper-cnn (1 epoch)": (work / "paper-cnn", {"recipe": None, "layer": {
                "model": {"name": "paper-cnn"}, "data": {"val_fraction": 0.0},
                "train": {"epochs": 1}}}),
            "resnet (the packaged default model)": (Path("default"), None)}
    results = {}
    for name, (run, how) in runs.items():
        if how is not None and not (run / "model.pt").is_file():
            cfg = resolve_config({"data": {"data_dir": args.data_dir}}, how["layer"],
                                 recipe=how["recipe"])
            fit(cfg, out_dir=run, overwrite=True, progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            r = quantize_model(run, Path(tmp) / "int8.onnx", data_dir=args.data_dir)
        model = load(run)
        clf = model.classifier.eval()
        shape = model.input_spec.shape
        one, big = torch.randn(1, *shape), torch.randn(1000, *shape)
        lat, thr = [], []
        with torch.inference_mode():
            for _ in range(10):
                clf(one)
            for _ in range(5):
                for _ in range(40):
                    t0 = time.perf_counter()
                    clf(one)
                    lat.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                clf(big)
                thr.append(1000 / (time.perf_counter() - t0))
        eager = {"latency_ms_p50": round(statistics.median(lat), 4),
                 "throughput_images_per_s": round(statistics.median(thr), 1)}
        t = r["timing"]
        results[name] = {
            "parameters": sum(p.numel() for p in clf.parameters()),
            "accuracy": {"fp32": r["accuracy_fp32"], "int8": r["accuracy_int8"],
                         "change_points": r["accuracy_change_points"]},
            "top1_agreement": r["top1_agreement"],
            "bytes": {"onnx_fp32": r["fp32_bytes"], "onnx_int8": r["int8_bytes"],
                      "ratio": r["size_ratio"]},
            "pytorch_eager": eager, "ort_fp32": t["fp32"], "ort_int8": t["int8"],
            "int8_vs_fp32_latency": r["latency_speedup"],
            "int8_vs_fp32_throughput": r["throughput_speedup"],
            "ort_fp32_vs_eager_throughput_1000": round(
                t["fp32"]["throughput_images_per_s"] / eager["throughput_images_per_s"], 2),
            "pytorch_int8": r.get("pytorch_int8"),  # PyTorch's own x86 INT8, for comparison
        }
    print(json.dumps({"machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
