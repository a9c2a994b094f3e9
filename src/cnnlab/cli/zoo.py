"""``cnnlab zoo``: the model zoo table, from the benchmark's JSON or from a small run."""

from __future__ import annotations

import argparse

from cnnlab.cli._util import Formatter, Parser, SubParsers, int_in, print_json


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    p = sub.add_parser(
        "zoo", parents=[common], formatter_class=formatter,
        help="compare the model families: accuracy, training time, size, latency, INT8",
        description="Print the model zoo table: for every family at its default size, test "
                    "accuracy (mean and range of seeds) at one fixed training budget, training "
                    "time, parameters, MACs, batch-1 p50 latency in PyTorch, ONNX Runtime FP32 "
                    "and INT8, the accuracy after INT8 and the accuracy-latency Pareto front. "
                    "With --results it reads a JSON from benchmarks/bench_zoo.py (or from "
                    "`cnnlab zoo --out`); without, it trains and measures a small version on "
                    "MNIST.",
        epilog="Examples:\n  cnnlab zoo --results benchmarks/results/zoo.json\n"
               "  cnnlab zoo --families convnet,mobilenet --images 1000 --seeds 1 "
               "--data-dir data/mnist --out runs/zoo.json --plot runs/zoo.png")
    p.add_argument("--results", default=None, metavar="FILE",
                   help="print the table of this zoo JSON instead of running (default: run)")
    p.add_argument("--families", default=None, metavar="A,B,...",
                   help="comma-separated models to run, or with --results to show (default: "
                        "every family the benchmark runs: lenet5, paper-cnn, convnet, resnet, "
                        "inception, densenet, mobilenet, efficientnet, vit)")
    p.add_argument("--images", type=int_in(100, 60_000), default=1000, metavar="N",
                   help="training images per run: one epoch over a stratified subset "
                        "(default: 1000; the benchmark uses 5000)")
    p.add_argument("--seeds", type=int_in(1, 100), default=1, metavar="N",
                   help="seeds per family (default: 1; the benchmark uses 3)")
    p.add_argument("--data-dir", default="", metavar="DIR",
                   help="where the MNIST files are (default: $CNNLAB_DATA_DIR, then "
                        "~/.cache/cnnlab/mnist)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="write the results (the rows shown) as JSON (default: not written)")
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="write the accuracy-vs-latency Pareto plot as PNG (default: none)")
    p.add_argument("--markdown", default=None, metavar="FILE",
                   help="write the table as Markdown (default: not written)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from cnnlab.deploy.zoo import FAMILIES, format_table, load_results, plot_zoo, run_zoo
    from cnnlab.errors import ConfigError

    wanted = (None if args.families is None
              else [f.strip() for f in args.families.split(",") if f.strip()])
    if args.results:
        data = load_results(args.results)
        if wanted is not None:  # a filter on the rows measured already
            have = [r["model"] for r in data["models"]]
            missing = [f for f in wanted if f not in have]
            if missing:
                raise ConfigError(f"{args.results} has no row for {', '.join(missing)}; it "
                                  f"has {', '.join(have)}")
            data = {**data, "models": [r for r in data["models"] if r["model"] in wanted]}
    else:
        data = run_zoo(FAMILIES if wanted is None else wanted, images=args.images,
                       seeds=args.seeds, data_dir=args.data_dir, progress=not args.quiet)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(data, indent=2) + "\n")
    rows = data["models"]
    table = format_table(rows)
    if args.plot:
        plot_zoo(rows, args.plot)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        print_json(data)
        return 0
    budget = data.get("budget", {})
    print(table)
    if budget:
        print(f"\nbudget: one epoch over {budget.get('training_images')} training images, "
              f"{budget.get('seeds')} seed(s); latency: batch 1, p50", file=sys.stdout)
    return 0
