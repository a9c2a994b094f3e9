"""``cnnlab bench CHECKPOINT``: every inference engine on one model, in one run."""

from __future__ import annotations

import argparse

from cnnlab.cli._util import Formatter, Parser, SubParsers


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    from cnnlab.deploy.bench import ENGINES

    p = sub.add_parser(
        "bench", parents=[common], formatter_class=formatter,
        help="measure a model on every inference engine",
        description="Measure one model on PyTorch eager, channels_last, torch.compile, "
                    "TorchScript,\nPyTorch static INT8 (FX graph mode, x86 engine), ONNX "
                    "Runtime FP32 and ONNX Runtime\nstatic INT8: batch-1 latency (p50, p95), "
                    "throughput at batch 256 and 1000, the memory\na batch-1000 call adds, "
                    "file size and test accuracy. The INT8 engines calibrate on 512\ntraining "
                    "images (--data-dir).\nEngines alternate over --rounds rounds and medians are "
                    "reported; the thread count and\nmalloc settings are printed with the "
                    "table. Run it on a quiet machine.",
        epilog="Example: cnnlab bench runs/fast --json")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="run directory, checkpoint, or `default` (the packaged MNIST model)")
    p.add_argument("--engines", default=",".join(ENGINES),
                   help=f"comma-separated subset of {', '.join(ENGINES)} (default: all)")
    p.add_argument("--rounds", type=int, default=5, help="default: 5")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="the model's dataset, for accuracy and INT8 calibration")
    p.add_argument("--memory", action="store_true",
                   help="also measure each engine's peak memory for a batch of 1000, in a "
                        "fresh process per engine (slower)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.cli._util import print_json, table
    from cnnlab.deploy.bench import bench_model
    from cnnlab.errors import ConfigError

    if args.rounds < 1:
        raise ConfigError(f"--rounds must be >= 1; got {args.rounds}")
    r = bench_model(args.checkpoint, engines=tuple(e.strip() for e in args.engines.split(",")),
                    rounds=args.rounds, data_dir=args.data_dir, measure_memory=args.memory,
                    progress=not args.quiet)
    r["malloc"] = "M_MMAP_THRESHOLD=1 GiB, M_TRIM_THRESHOLD=2 GiB (set by the cnnlab command)"
    if args.json:
        print_json(r)
        return 0
    header = ["engine", "p50 ms", "p95 ms", "img/s @256", "img/s @1000", "peak +MB", "file kB",
              "accuracy"]
    rows = []
    for row in r["rows"]:
        if "latency_ms_p50" not in row:
            rows.append([row["engine"], "failed: " + row["note"][:60], "", "", "", "", "", ""])
            continue
        rows.append([row["engine"], f"{row['latency_ms_p50']:.3f}", f"{row['latency_ms_p95']:.3f}",
                     f"{row['throughput_256']:,.0f}", f"{row['throughput_1000']:,.0f}",
                     f"{row['peak_memory_mb']:.0f}" if row["peak_memory_mb"] is not None
                     else "",
                     f"{row['file_bytes'] / 1e3:.0f}" if row["file_bytes"] else "",
                     f"{row['accuracy']:.2%}" if row["accuracy"] is not None else ""])
    print(f"{r['source']} on {r['checked_on']}; {r['threads']} threads; {r['malloc']}; medians "
          f"of {r['rounds']} rounds")
    print(table(rows, header))
    print(f"fastest at batch 1: {r['fastest_batch_1']}")
    return 0
