"""``cnnlab cv``: stratified k-fold cross-validation of a model and recipe."""

from __future__ import annotations

import argparse

from cnnlab.cli.train import _D, FLAGS

# every training flag except --val-fraction: each fold's held-out part is its validation set
CV_FLAGS = tuple(f for f in FLAGS if f != "val_fraction")


def add_parser(sub, common, formatter) -> None:  # type: ignore[no-untyped-def]
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
    p.add_argument("--recipe", default=None, help="start from a recipe (see `cnnlab train -h`)")
    p.add_argument("-c", "--config", default=None, metavar="FILE", help="a TOML config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set optim.lr=0.01 (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted cross-validation in --out: finished folds "
                        "are kept, an interrupted fold continues from its last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a cross-validation already in --out (default: refuse)")
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default=None, help=f"model name (default: {_D.model.name})")
    g.add_argument("--dataset", default=None,
                   help=f"dataset name or image folder (default: {_D.data.dataset})")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the dataset files are (default: $CNNLAB_DATA_DIR, then "
                        "~/.cache/cnnlab/NAME)")
    g.add_argument("--limit", type=int, default=None,
                   help="cross-validate on a stratified subset of N images (default: all)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random rotation, scaling and shifts on every batch (default: off)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None,
                   help=f"per fold (default: {_D.train.epochs})")
    g.add_argument("--batch-size", type=int, default=None, help=f"default: {_D.train.batch_size}")
    g.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default=None,
                   help=f"default: {_D.optim.optimizer}")
    g.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate (default: {_D.optim.lr})")
    g.add_argument("--momentum", type=float, default=None,
                   help=f"SGD momentum / Adam beta1 (default: {_D.optim.momentum})")
    g.add_argument("--weight-decay", type=float, default=None,
                   help=f"default: {_D.optim.weight_decay}")
    g.add_argument("--scheduler", choices=["none", "step", "cosine", "onecycle", "plateau"],
                   default=None, help=f"learning-rate schedule (default: {_D.optim.scheduler})")
    g.add_argument("--label-smoothing", type=float, default=None,
                   help=f"default: {_D.train.label_smoothing}")
    g.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="EMA of the weights with this decay, e.g. 0.999 (default: off)")
    g.add_argument("--early-stopping", type=int, default=None, metavar="EPOCHS",
                   help="stop a fold after this many epochs without validation gain "
                        "(default: off)")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=None,
                   help=f"seeds training and the fold assignment (default: {_D.train.seed})")
    g.add_argument("--device", default=None,
                   help=f"auto | cpu | cuda | cuda:N (default: {_D.train.device})")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice)")
    g.add_argument("--json", action="store_true",
                   help="print cv_metrics.json's content as one JSON object")
    p.set_defaults(run=run)


# the figures shown in the summary, in this order, when the folds report them
_SHOWN = ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "best_epoch",
          "train_time_s")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnlab.cli._util import print_json, table
    from cnnlab.config import flags_layer, load_config_file, parse_set, resolve_config
    from cnnlab.errors import ConfigError
    from cnnlab.tune import cross_validate

    flags = {name: getattr(args, name) for name in CV_FLAGS}
    layers = [load_config_file(args.config) if args.config else {}, parse_set(args.set),
              flags_layer(flags)]
    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out, the cross-validation directory to continue")
        saved = Path(args.out) / "config.toml"
        if not saved.is_file():
            raise ConfigError(
                f"--resume: {saved} does not exist; is {args.out!r} a cross-validation directory?"
            )
        layers.insert(0, load_config_file(saved))
    cfg = resolve_config(*layers, recipe=args.recipe)
    out = Path(args.out or f"runs/cv-{cfg.recipe or cfg.model.name}")
    result = cross_validate(cfg, args.folds, out_dir=out, resume=args.resume,
                            overwrite=args.overwrite, progress=not args.quiet)
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
