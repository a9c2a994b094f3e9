"""``cnnlab report RUN_DIR_OR_CHECKPOINT``: the evaluation report (report.html, report.md,
metrics.json and plots/) of a trained model."""

from __future__ import annotations

import argparse

from cnnlab.cli._util import Formatter, Parser, SubParsers


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    p = sub.add_parser(
        "report", parents=[common], formatter_class=formatter,
        help="write the evaluation report of a trained model",
        description="Evaluate a checkpoint (or a run directory's model.pt) and write report.html\n"
                    "(self-contained, figures embedded), report.md, plots/*.png and an\n"
                    "'evaluation' section in metrics.json. The report opens with a model card:\n"
                    "data, recipe, headline metrics with 95 % intervals, efficiency and known\n"
                    "limits. On the MNIST test split it adds the writer-group breakdown.",
        epilog="Example: cnnlab report runs/fast   (then open runs/fast/report.html)")
    p.add_argument("checkpoint", metavar="RUN_DIR_OR_CHECKPOINT",
                   help="run directory, checkpoint, or `default` (the packaged MNIST model)")
    p.add_argument("--dataset", default=None,
                   help="dataset name or image folder (default: the one the model was trained on)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the dataset files are (default: the training run's)")
    p.add_argument("--split", choices=["train", "test"], default="test",
                   help="which split (default: test)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where to write the report (default: the run directory)")
    p.add_argument("--batch-size", type=int, default=1000, help="default: 1000")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap resamples for the 95 %% intervals (default: 1000)")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda (default: cpu)")
    p.add_argument("--json", action="store_true",
                   help="print the evaluation metrics as one JSON object (fractions, not %%)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.cli._util import print_json
    from cnnlab.errors import ConfigError
    from cnnlab.evaluate.report import build_report

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1; got {args.batch_size}")
    if args.bootstrap < 1:
        raise ConfigError(f"--bootstrap must be at least 1; got {args.bootstrap}")
    result = build_report(args.checkpoint, dataset=args.dataset, data_dir=args.data_dir,
                          split=args.split, device=args.device, out_dir=args.out,
                          batch_size=args.batch_size, n_boot=args.bootstrap,
                          progress=not args.quiet)
    if args.json:
        print_json(result)
        return 0
    acc, (low, high) = result["accuracy"], result["accuracy_ci"]
    print(f"{result['checkpoint']}: {result['dataset']} {result['split']}, "
          f"{result['samples']:,} images")
    print(f"accuracy {acc:.2%} (95 % CI {low:.2%} to {high:.2%})   "
          f"macro F1 {result['macro_f1']:.4f}   ECE {result['ece']:.4f}")
    if "writer_groups" in result:
        wg = result["writer_groups"]
        a, b = wg["groups"]
        print(f"writer groups: {a['name']} {a['accuracy']:.2%}, {b['name']} {b['accuracy']:.2%}, "
              f"gap {wg['gap']:+.2%} (95 % CI {wg['gap_ci'][0]:+.2%} to {wg['gap_ci'][1]:+.2%})")
    files = result["files"]
    print(f"\nreport:  {files['html']}\n         {files['markdown']}\n"
          f"metrics: {files['metrics']}\nplots:   {len(files['plots'])} in "
          f"{_common_dir(list(files['plots'].values()))}")
    return 0


def _common_dir(paths: list[str]) -> str:
    from pathlib import Path

    return str(Path(paths[0]).parent) if paths else "-"
