"""The model zoo on MNIST, one table from one run; prints one JSON object.

Every family at its registered default size trains under the same fixed budget (one epoch
over a stratified subset of ``--images`` training images; AdamW with a one-cycle schedule and
label smoothing; fp32), once per seed; see :mod:`cnnlab.deploy.zoo` for what is measured:
test accuracy (mean and range over the seeds), training time, parameters, MACs, batch-1 p50
latency in PyTorch eager, ONNX Runtime FP32 and INT8, the test accuracy after INT8, and the
accuracy-latency Pareto front. ``--plot`` draws it. The JSON is rewritten after each family,
so a run cut short keeps what it measured.

    python benchmarks/bench_zoo.py --out benchmarks/results/zoo.json --plot zoo.png
    python benchmarks/bench_zoo.py --images 2000 --seeds 1 --families convnet,vit   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from cnnlab.deploy.zoo import FAMILIES, format_table, plot_zoo, run_zoo  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", default=",".join(FAMILIES),
                   help=f"comma-separated models (default: {','.join(FAMILIES)})")
    p.add_argument("--images", type=int, default=5000,
                   help="training images: one epoch over a stratified subset (default: 5000)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per family (default: 3)")
    p.add_argument("--data-dir", default=str(ROOT / "data" / "mnist"))
    # one thread: on the 2 shared cores at load 13, two threads trained convnet 4x and
    # mobilenet 7x slower than one (OpenMP threads spinning against the neighbours)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    p.add_argument("--plot", default=None, help="write the Pareto plot (PNG) here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    machine: dict[str, Any] = {
        "platform": platform.platform(), "processor": platform.processor(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "load_average_before": [round(x, 2)
                                                            for x in os.getloadavg()]}
    t0 = time.perf_counter()

    def document(result: dict[str, Any]) -> dict[str, Any]:
        machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        return {"benchmark": "zoo", "machine": machine,
                "wall_time_s": round(time.perf_counter() - t0, 1), **result}

    def write(result: dict[str, Any]) -> None:
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(document(result), indent=2) + "\n")

    families = [f.strip() for f in args.families.split(",") if f.strip()]
    result = run_zoo(families, images=args.images, seeds=args.seeds, data_dir=args.data_dir,
                     progress=False, on_family=write)
    out = document(result)
    if args.plot:
        out["plot"] = str(plot_zoo(result["models"], args.plot))
    write(result)
    print(json.dumps(out, indent=2))
    print(format_table(result["models"]), file=sys.stderr)


if __name__ == "__main__":
    main()
