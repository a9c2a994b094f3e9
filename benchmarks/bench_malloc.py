"""Does the glibc malloc tuning in the CLI entry point pay? Prints one JSON object.

Runs batch-1000 inference of a few models in fresh processes, alternately with and without
``cnnlab.cli.main._tune_malloc()``, and reports the median throughput of each and their ratio.

    python benchmarks/bench_malloc.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import sys, time, statistics, json
sys.path.insert(0, {src!r})
if {tune}:
    from cnnlab.cli.main import _tune_malloc
    _tune_malloc()
import torch
from cnnlab.config import resolve_config
from cnnlab.models import create_model
torch.set_num_threads(2)
out = {{}}
for name, kwargs in {models!r}:
    model = create_model(name, **kwargs).eval()
    x = torch.randn(1000, 1, 28, 28)
    with torch.inference_mode():
        model(x)
        rates = []
        for _ in range(5):
            t0 = time.perf_counter()
            model(x)
            rates.append(1000 / (time.perf_counter() - t0))
    out[name] = statistics.median(rates)
print(json.dumps(out))
"""

MODELS = [("paper-cnn", {}), ("convnet", {}),
          ("resnet", {"widths": [32, 64, 128], "blocks": [0, 1, 1], "downsample": "maxpool"})]


def run(tune: bool) -> dict[str, float]:
    code = CHILD.format(src=str(ROOT / "src"), tune=tune, models=MODELS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env=env)
    return json.loads(done.stdout)


def main() -> None:
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for _ in range(3):  # alternate, so drift in machine load hits both alike
        for tune in (False, True):
            results[tune].append(run(tune))
    out = {"load_average": os.getloadavg(), "models": {}}
    for name, _ in MODELS:
        plain = statistics.median(r[name] for r in results[False])
        tuned = statistics.median(r[name] for r in results[True])
        out["models"][name] = {"images_per_s_default": round(plain, 1),
                               "images_per_s_tuned": round(tuned, 1),
                               "speedup": round(tuned / plain, 3)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
