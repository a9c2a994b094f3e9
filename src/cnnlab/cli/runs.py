"""``cnnlab runs``: list run directories with their model, recipe, headline metrics and time."""

from __future__ import annotations

import argparse

from cnnlab.cli._util import Formatter, Parser, SubParsers


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    from cnnlab.training.runs import COLUMNS

    p = sub.add_parser(
        "runs", parents=[common], formatter_class=formatter, help="list and compare runs",
        description="List the run directories under DIR (searched recursively) with their model, "
                    "recipe, dataset,\nepochs, validation and test accuracy, training time and "
                    "date. Unfinished runs show as\n'incomplete', unreadable ones as 'broken'; "
                    "cross-validations ('cv') show means over their folds.",
        epilog="Examples:\n  cnnlab runs\n  cnnlab runs runs/ --sort test_accuracy --reverse\n"
               "  cnnlab runs runs/ --json",
    )
    p.add_argument("dir", nargs="?", default="runs", metavar="DIR",
                   help="directory to search (default: runs)")
    p.add_argument("--sort", default="date", metavar="KEY",
                   help=f"column to sort by, one of: {', '.join(COLUMNS)} (default: date); "
                        "runs without a value come last")
    p.add_argument("--reverse", action="store_true",
                   help="sort descending, e.g. best accuracy first (default: ascending)")
    p.add_argument("--json", action="store_true", help="print the runs as one JSON list")
    p.set_defaults(run=run)


def _pct(value: object) -> str:
    return f"{value:.2%}" if isinstance(value, int | float) else "-"


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnlab.cli._util import print_json, table
    from cnnlab.training.runs import list_runs

    rows = list_runs(args.dir, sort=args.sort, reverse=args.reverse)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print(f"no runs under {args.dir}/ (a run directory holds config.toml or metrics.json)")
        return 0
    body = []
    for r in rows:
        done, planned = r["epochs_run"], r["epochs"]
        epochs = f"{done:g}" if isinstance(done, int | float) else "-"
        if planned is not None and done != planned:
            epochs += f"/{planned}"  # an unfinished run, or one that stopped early
        dataset = r["dataset"]
        if isinstance(dataset, str) and ("/" in dataset or "\\" in dataset):
            dataset = Path(dataset).name or dataset
        time_s = r["train_time_s"]
        body.append([r["name"], r["status"], r["model"] or "-", r["recipe"] or "-",
                     dataset or "-", str(epochs), _pct(r["val_accuracy"]),
                     _pct(r["test_accuracy"]),
                     f"{time_s:.1f}" if isinstance(time_s, int | float) else "-",
                     r["date"] or "-"])
    header = ["name", "status", "model", "recipe", "dataset", "epochs", "val acc", "test acc",
              "time s", "date"]
    print(table(body, header, align="lllllrrrrl"))
    broken = [r for r in rows if r["problem"]]
    for r in broken:
        print(f"  {r['name']}: {r['problem']}")
    return 0
