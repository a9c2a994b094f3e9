"""``cnnlab cv``: stratified k-fold cross-validation of a model and recipe."""

from __future__ import annotations

import argparse

from cnnlab.cli._util import Formatter, Parser, SubParsers
from cnnlab.cli.train import add_settings_flags, resolve_settings

# every training flag but the splits': each fold's held-out part is its validation set, and
# the test split is the data's own
CV_EXCLUDED = ("val_fraction", "test_fraction")


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    p = sub.add_parser(
        "cv", parents=[common], formatter_class=formatter,
        help="k-fold cross-validation of a model",
        description="Stratified k-fold cross-validation over the training split: no separate "
                    "validation split,\neach fold's held-out part validates it. Writes to --out:"
                    "\n  config.toml          the resolved settings"
                    "\n  folds.json           the fold manifest (checked on --resume)"
                    "\n  fold-1/ ... fold-K/  ordinary run directories (model.pt, last.pt, ...)"
                    "\n  cv_metrics.json      mean and standard deviation of every metric over "
                    "the folds,\n                       and the pooled out-of-fold confusion "
                    "matrix"
                    "\n  oof_predictions.csv  each image's fold, target and out-of-fold "
                    "prediction"
                    "\n  learning_curves.png  loss and accuracy per epoch, mean ± std over folds"
                    "\n\nSettings come from, lowest first: defaults < --recipe < -c FILE < "
                    "--set KEY=VALUE < flags,\nas for `cnnlab train`.",
        epilog="Examples:\n  cnnlab cv --model paper-cnn --folds 5 --epochs 3 --out runs/cv\n"
               "  cnnlab cv --recipe fast --folds 5 --out runs/cv-fast\n"
               "  cnnlab cv --out runs/cv --resume        (after an interruption)",
    )
    p.add_argument("--folds", type=int, default=5, metavar="K",
                   help="number of folds, at least 2 (default: 5)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="cross-validation directory (default: runs/cv-<recipe or model>)")
    p.add_argument("--group-by", choices=("none", "writer"), default="none",
                   help="writer: group k-fold, every NIST writer's digits in one fold only "
                        "(MNIST, from the QMNIST labels), so each fold validates on new writers "
                        "(default: none, stratified folds)")
    g = add_settings_flags(
        p, kind="cross-validation", exclude=CV_EXCLUDED,
        resume_help="continue the interrupted cross-validation in --out: finished folds are "
                    "kept, an interrupted fold continues from its last.pt")
    g.add_argument("--json", action="store_true",
                   help="print cv_metrics.json's content as one JSON object")
    p.set_defaults(run=run)


# the figures shown in the summary, in this order, when the folds report them
_SHOWN = ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "best_epoch",
          "train_time_s")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnlab.cli._util import print_json, table
    from cnnlab.tune import cross_validate

    cfg = resolve_settings(args, kind="cross-validation")
    out = Path(args.out or f"runs/cv-{cfg.recipe or cfg.model.name}")
    result = cross_validate(cfg, args.folds, out_dir=out, resume=args.resume,
                            overwrite=args.overwrite, progress=not args.quiet,
                            group_by=args.group_by)
    if args.json:
        print_json({"cv_dir": str(out), **result})
        return 0
    metrics = result["metrics"]
    rows = []
    for key in _SHOWN:
        if key not in metrics:
            continue
        m = metrics[key]
        pct = key.endswith("_accuracy")

        def fmt(v: float, pct: bool = pct) -> str:
            return f"{v:.2%}" if pct else f"{v:.4g}"

        rows.append([key, fmt(m["mean"]), fmt(m["std"]),
                     "  ".join(fmt(v) for v in m["values"])])
    oof = result["out_of_fold"]
    lines = [f"{result['folds']}-fold cross-validation of {result['model']} on "
             f"{result['dataset']} ({result['samples']:,} training images)",
             table(rows, ["metric", "mean", "std", "per fold"], align="lrrl"),
             f"out-of-fold accuracy {oof['accuracy']:.2%}, macro F1 {oof['macro_f1']:.4f} "
             f"({oof['images']:,} images, each predicted by the fold that held it out)",
             f"cross-validation directory: {out}/",
             "  cv_metrics.json      mean, std and per-fold values; out-of-fold confusion matrix",
             "  learning_curves.png  loss and accuracy per epoch, mean ± std over folds",
             "  oof_predictions.csv  each image's fold, target and out-of-fold prediction",
             "  folds.json           the fold manifest;  fold-N/  each fold's run directory"]
    print("\n".join(lines))
    return 0
