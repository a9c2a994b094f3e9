"""``cnnlab fairness RUN``: a trained model's errors by group of writers or images, with
intervals that resample writers, and a Fairness section in the run's report."""

from __future__ import annotations

import argparse

from cnnlab.cli._util import Formatter, Parser, SubParsers

GROUP_HELP = ("population (NIST students vs Census Bureau employees, from the QMNIST labels) | "
              "writer | derived:thickness | derived:slant | derived:size | derived:ink | "
              "FILE.csv (path,group rows for an image folder)")


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    p = sub.add_parser(
        "fairness", parents=[common], formatter_class=formatter,
        help="a model's errors by writer group, with writer-bootstrap intervals",
        description="Break a trained model's figures down by group: accuracy, error rate, "
                    "log-loss and per-class recall and precision per group (Fairlearn's "
                    "MetricFrame), the worst group, the differences and ratios between groups "
                    "and the per-class recall gaps (multiclass equal opportunity), each with a "
                    "95 % bootstrap interval that resamples writers, not digits. On MNIST the "
                    "groups come from the QMNIST writer labels; for any digit data, "
                    "derived:ATTR bins an attribute measured from the image in MNIST form into "
                    "quantiles; for a folder, a CSV of path,group rows names your own groups. "
                    "Where writers are known, the per-writer accuracy histogram, the worst "
                    "writers and the share of errors they make are added. Groups of fewer than "
                    "30 images are shown with a warning and left out of every comparison.\n\n"
                    "Writes fairness.json and plots/fairness_*.png into the report directory "
                    "and adds a Fairness section (and model-card rows) to its report.",
        epilog="Examples:\n  cnnlab fairness default\n"
               "  cnnlab fairness runs/fast --group writer --json\n"
               "  cnnlab fairness runs/fast --group derived:thickness --bins 5\n"
               "  cnnlab fairness runs/fast --data-dir scans/ --group groups.csv")
    p.add_argument("checkpoint", metavar="RUN",
                   help="run directory, checkpoint, or `default` (the packaged MNIST model)")
    p.add_argument("--group", default="population", metavar="KIND",
                   help=f"what the groups are: {GROUP_HELP} (default: population)")
    p.add_argument("--dataset", default=None,
                   help="dataset name or image folder (default: the one the model was trained on)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the dataset files are (and the QMNIST labels, or beside it), or "
                        "an image folder to evaluate (default: the training run's)")
    p.add_argument("--split", choices=["train", "val", "test"], default="test",
                   help="which split of the run's own data (default: test)")
    p.add_argument("--bins", type=int, default=4,
                   help="derived:ATTR: quantile groups, 2-20 (default: 4)")
    p.add_argument("--n-boot", type=int, default=1000,
                   help="bootstrap draws, 10-100000 (default: 1000)")
    p.add_argument("--worst", type=int, default=10,
                   help="worst writers listed, 1-100 (default: 10)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="the report directory (default: the run's, as `cnnlab report`)")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda (default: cpu)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (fractions, not percentages)")
    p.set_defaults(run=run)


def _check(name: str, value: int, low: int, high: int) -> None:
    from cnnlab.errors import ConfigError

    if not low <= value <= high:
        raise ConfigError(f"--{name} must be from {low} to {high}; got {value}")


def run(args: argparse.Namespace) -> int:
    from cnnlab.cli._util import print_json, table
    from cnnlab.fairness.analysis import analyze_fairness, summary_lines
    from cnnlab.fairness.groups import check_kind

    _check("bins", args.bins, 2, 20)
    _check("n-boot", args.n_boot, 10, 100_000)
    _check("worst", args.worst, 1, 100)
    check_kind(args.group)
    result = analyze_fairness(args.checkpoint, group=args.group, dataset=args.dataset,
                              data_dir=args.data_dir, split=args.split, bins=args.bins,
                              n_boot=args.n_boot, worst=args.worst, device=args.device,
                              out_dir=args.out, progress=not args.quiet)
    if args.json:
        slim = dict(result)
        if "writers" in slim:  # the per-writer lists are in fairness.json
            slim["writers"] = {k: v for k, v in slim["writers"].items()
                               if k not in ("per_writer_accuracy", "writer_ids")}
        print_json(slim)
        return 0
    print(f"{result['checkpoint']}: {result['data']}, {result['samples']:,} images, groups: "
          f"{result['group']}")
    m = result.get("metrics")
    if m:
        rows = [[g["name"] + (" (small)" if g["small"] else ""), str(g["samples"]),
                 f"{g['accuracy']:.2%}", f"{g['error_rate']:.2%}",
                 f"[{g['error_rate_ci'][0]:.2%}, {g['error_rate_ci'][1]:.2%}]",
                 f"{g['log_loss']:.4f}"] for g in m["groups"]]
        print(table(rows, ["group", "images", "accuracy", "error", "95 % CI", "log-loss"]))
    for line in summary_lines(result):
        print(line)
    w = result.get("writers")
    if w:
        print(table([[str(e["writer"]), str(e["images"]), str(e["errors"]),
                      f"{e['accuracy']:.2%}"] for e in w["worst"]],
                    ["worst writer", "images", "errors", "accuracy"]))
    files = result.get("files", {})
    print(f"written: {files.get('json')}" + (f"; report: {files['report']}"
                                            if "report" in files else ""))
    print(f"time: {result['time_s']:.1f} s")
    return 0
