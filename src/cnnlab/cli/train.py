"""``cnnlab train``: train a model and write a run directory."""

from __future__ import annotations

import argparse

from cnnlab.config import Config

_D = Config()  # field defaults, quoted in --help


def add_parser(sub, common, formatter) -> None:  # type: ignore[no-untyped-def]
    from cnnlab.config import RECIPE_HELP

    recipes = "\n".join(f"  {name:8s} {text}" for name, text in RECIPE_HELP.items())
    p = sub.add_parser(
        "train", parents=[common], formatter_class=formatter, help="train a model",
        description="Train a model and write a run directory: config.toml, model.pt (best), "
                    "last.pt, history.csv, metrics.json, env.json.\n\n"
                    "Settings come from, lowest first: defaults < --recipe < -c FILE < "
                    "--set KEY=VALUE < flags.\n\nRecipes:\n" + recipes,
        epilog="Examples:\n  cnnlab train --recipe fast --out runs/fast\n"
               "  cnnlab train --model lenet5 --epochs 5 --lr 0.001 --out runs/lenet\n"
               "  cnnlab train --out runs/fast --resume\n"
               "  cnnlab train -c runs/fast/config.toml --set train.seed=1 --out runs/fast-s1",
    )
    p.add_argument("--out", default=None, metavar="DIR",
                   help="run directory (default: runs/<recipe or model>)")
    g = add_settings_flags(p, kind="run", validation=True,
                           resume_help="continue the interrupted run in --out from its last.pt")
    g.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="write report.html, report.md and plots/ into the run directory after "
                        "training (default: on, when the run has a test split)")
    g.add_argument("--json", action="store_true", help="print the final metrics as one JSON object")
    p.set_defaults(run=run)


FLAGS = ("model", "dataset", "data_dir", "val_fraction", "test_fraction", "image_size",
         "preprocess", "limit", "augment", "epochs",
         "batch_size", "optimizer", "lr", "momentum", "weight_decay", "scheduler",
         "label_smoothing", "ema", "early_stopping", "seed", "device", "threads")


def add_settings_flags(p: argparse.ArgumentParser, *, kind: str, validation: bool,
                       resume_help: str) -> argparse._ArgumentGroup:
    """The settings flags `train` and `cv` share; returns the "run" group for more flags.

    ``kind`` names what --out holds ("run", "cross-validation"); ``validation`` adds
    --val-fraction (cv has none: each fold's held-out part validates it).
    """
    p.add_argument("--recipe", default=None, help="start from a recipe (see `cnnlab train -h`)")
    p.add_argument("-c", "--config", default=None, metavar="FILE", help="a TOML config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set optim.lr=0.01 (repeatable)")
    p.add_argument("--resume", action="store_true", help=resume_help)
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace a {kind} already in --out (default: refuse)")
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default=None, help=f"model name (default: {_D.model.name})")
    g.add_argument("--dataset", default=None,
                   help=f"dataset name or image folder (default: {_D.data.dataset})")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the dataset files are (default: $CNNLAB_DATA_DIR, then "
                        "~/.cache/cnnlab/NAME)")
    if validation:
        g.add_argument("--val-fraction", type=float, default=None,
                       help=f"validation split (default: {_D.data.val_fraction:.4f}, "
                            "5,000 of 60,000)")
        g.add_argument("--test-fraction", type=float, default=None,
                       help="an image folder without test/: the share held out as the test "
                            f"split, stratified and seeded (default: {_D.data.test_fraction})")
    g.add_argument("--image-size", type=int, default=None, metavar="N",
                   help="train at NxN (default: the data's own size: 28 for MNIST, a folder's "
                        "common image size, at most 224 on the longer side)")
    g.add_argument("--preprocess", choices=["mnist-digits", "resize"], default=None,
                   help="how image files become input: mnist-digits brings each digit to MNIST "
                        "form (MNIST itself: the default), resize takes the whole image "
                        "(folders: the default); recorded in the checkpoint for predict and "
                        "serve")
    g.add_argument("--limit", type=int, default=None,
                   help="use a stratified subset of N training images (default: all)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random rotation, scaling and shifts on every batch (default: off)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None, help=f"default: {_D.train.epochs}")
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
                   help="keep an exponential moving average of the weights with this decay, "
                        "e.g. 0.999, and evaluate it (default: off)")
    g.add_argument("--early-stopping", type=int, default=None, metavar="EPOCHS",
                   help="stop after this many epochs without validation gain (default: off)")
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=None, help=f"default: {_D.train.seed}")
    g.add_argument("--device", default=None,
                   help="auto | cpu | cuda | cuda:N; auto picks CUDA when present "
                        f"(default: {_D.train.device})")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice)")
    return g


def resolve_settings(args: argparse.Namespace, flags: tuple[str, ...], *, kind: str) -> Config:
    """The config from --recipe, -c, --set and the flags; with --resume, the saved
    config.toml in --out is the base layer.

    Raises:
        ConfigError: --resume without a resumable --out, or invalid settings.
    """
    from pathlib import Path

    from cnnlab.config import flags_layer, load_config_file, parse_set, resolve_config
    from cnnlab.errors import ConfigError

    values = {name: getattr(args, name) for name in flags}
    layers = [load_config_file(args.config) if args.config else {}, parse_set(args.set),
              flags_layer(values)]
    if args.resume:
        if not args.out:
            raise ConfigError(f"--resume needs --out, the {kind} directory to continue")
        saved = Path(args.out) / "config.toml"
        if not saved.is_file():
            raise ConfigError(
                f"--resume: {saved} does not exist; is {args.out!r} a {kind} directory?")
        layers.insert(0, load_config_file(saved))
    return resolve_config(*layers, recipe=args.recipe)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnlab.cli._util import print_json
    from cnnlab.training.loop import fit

    cfg = resolve_settings(args, FLAGS, kind="run")
    out = Path(args.out or f"runs/{cfg.recipe or cfg.model.name}")
    result = fit(cfg, out_dir=out, resume=args.resume, overwrite=args.overwrite,
                 progress=not args.quiet)
    m = result.metrics
    report = None
    if args.report and "test_accuracy" in m:  # no test split: nothing fair to report on
        from cnnlab.evaluate.report import build_report
        from cnnlab.training.tracking import log_figures

        report = build_report(out, device=cfg.train.device, progress=not args.quiet)
        log_figures(out, report["files"]["plots"])
    if args.json:
        print_json({"run_dir": str(out), **m,
                    "report": report["files"]["html"] if report else None})
        return 0
    pre = result.preprocessing
    lines = [f"trained {cfg.model.name} on {cfg.data.dataset} for {m['epochs_run']} epoch(s) "
             f"in {m['train_time_s']:.1f} s ({m['images_per_s']:,.0f} img/s)",
             f"  input {pre['channels']}x{pre['height']}x{pre['width']}, preprocessing "
             f"{pre['kind']}"]
    for split in ("val", "test"):
        if f"{split}_accuracy" in m:
            lines.append(f"  {split + ' accuracy':15s} {m[split + '_accuracy']:.2%}  "
                         f"(loss {m[split + '_loss']:.4f}, {m[split + '_images']:,} images)")
    lines += [f"run directory: {out}/",
              f"  model.pt      best checkpoint (epoch {m['best_epoch']})",
              "  history.csv   per-epoch losses, accuracies, learning rate",
              "  metrics.json  final figures",
              *(["  report.html   evaluation report (model card, metrics, figures)"]
                if report else []),
              f"next: cnnlab evaluate {out}   |   cnnlab predict {out} IMAGE.png"]
    print("\n".join(lines))
    return 0
