"""``cnnlab train``: train a model and write a run directory."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from cnnlab.cli._util import Formatter, Parser, SubParsers

if TYPE_CHECKING:
    from cnnlab.config import Config


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
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
    g = add_settings_flags(p, kind="run",
                           resume_help="continue the interrupted run in --out from its last.pt")
    g.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="write report.html, report.md and plots/ into the run directory after "
                        "training (default: on, when the run has a test split)")
    g.add_argument("--json", action="store_true", help="print the final metrics as one JSON object")
    d = p.add_argument_group("distributed (torch.distributed, through torchrun)")
    d.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train data-parallel in N processes on this machine, launched through "
                        "torchrun (gloo on CPU, nccl on CUDA, one GPU each); the batch size is "
                        "the global batch (default: 1, no launch). Several machines: run "
                        "`torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d "
                        "--rdzv-endpoint HOST:PORT -m cnnlab.cli.main train ...` on each")
    d.add_argument("--dist-timeout", type=float, default=None, metavar="SECONDS",
                   help="how long a rank waits for the others in a collective before the run "
                        "fails (default: 300)")
    p.set_defaults(run=run)


def add_settings_flags(p: argparse.ArgumentParser, *, kind: str, resume_help: str,
                       exclude: tuple[str, ...] = ()) -> argparse._ArgumentGroup:
    """The settings flags `train` and `cv` share, generated from the config fields
    (:data:`cnnlab.config.FLAGS`: name, help, default, choices); returns the "run" group for
    more flags.

    ``kind`` names what --out holds ("run", "cross-validation"); ``exclude`` names flags the
    verb has no use for (cv: --val-fraction, as each fold's held-out part validates it).
    """
    from cnnlab.config import FLAGS

    p.add_argument("--recipe", default=None, help="start from a recipe (see `cnnlab train -h`)")
    p.add_argument("-c", "--config", default=None, metavar="FILE", help="a TOML config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set optim.lr=0.01 (repeatable)")
    p.add_argument("--resume", action="store_true", help=resume_help)
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace a {kind} already in --out (default: refuse)")
    groups = {name: p.add_argument_group(name)
              for name in ("model and data", "optimisation", "run")}
    for flag in FLAGS:
        if flag.name in exclude:
            continue
        options: dict[str, Any] = {"default": None, "help": flag.help_text(), "dest": flag.name}
        if flag.values:  # --augment [{affine,robust}] and --no-augment
            options.update(nargs="?", const=True, choices=list(flag.values))
            groups[flag.group].add_argument("--no-" + flag.option[2:], action="store_false",
                                            dest=flag.name, default=None, help=argparse.SUPPRESS)
        elif flag.type is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = flag.type
        if flag.choices:
            options["choices"] = list(flag.choices)
        if flag.metavar:
            options["metavar"] = flag.metavar
        groups[flag.group].add_argument(flag.option, **options)
    p.set_defaults(settings_flags=tuple(f.name for f in FLAGS if f.name not in exclude))
    return groups["run"]


def resolve_settings(args: argparse.Namespace, *, kind: str) -> Config:
    """The config from --recipe, -c, --set and the settings flags (with --resume, the saved
    config.toml in --out is the base layer), through the resolver `cnnlab.train()` uses;
    then the model's options, checked by its builder before any data is loaded.

    An invalid setting the user gave as a flag is reported as that flag.

    Raises:
        ConfigError: --resume without a resumable --out, invalid settings or model options.
    """
    from cnnlab.config import FLAGS, SettingError, resolve_run_config
    from cnnlab.errors import ConfigError
    from cnnlab.training.loop import check_model_settings

    if args.resume and not args.out:
        raise ConfigError(f"--resume needs --out, the {kind} directory to continue")
    given = {name: getattr(args, name) for name in args.settings_flags}
    try:
        cfg = resolve_run_config(recipe=args.recipe, file=args.config, overrides=args.set,
                                 flags=given, resume_dir=args.out if args.resume else None,
                                 kind=kind)
    except SettingError as e:
        flag = next((f for f in FLAGS if f.key == e.key and given.get(f.name) is not None), None)
        if flag is None:
            raise
        # the setting came from a flag: name the flag, as argparse does for its own errors
        raise ConfigError(f"argument {flag.option}: {e}") from e
    check_model_settings(cfg)
    return cfg


def _launch_ranks(args: argparse.Namespace) -> bool:
    """Whether this call launches ranks (``--nproc`` > 1 outside torchrun); checks the
    distributed options, and hands ``--dist-timeout`` to a rank's process group.

    Raises:
        ConfigError: an --nproc or --dist-timeout out of range.
    """
    import math

    from cnnlab.errors import ConfigError
    from cnnlab.training.distributed import TIMEOUT_ENV

    if args.nproc < 1 or args.nproc > 1024:
        raise ConfigError(f"argument --nproc: must be an integer in [1, 1024]; got {args.nproc}")
    if args.dist_timeout is not None:
        if not math.isfinite(args.dist_timeout) or args.dist_timeout <= 0:
            raise ConfigError("argument --dist-timeout: must be a finite number of seconds > 0; "
                              f"got {args.dist_timeout}")
        os.environ[TIMEOUT_ENV] = str(args.dist_timeout)
    return args.nproc > 1 and "WORLD_SIZE" not in os.environ


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` without its ``--nproc N`` / ``--nproc=N``: what each rank runs."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnlab.cli._util import print_json
    from cnnlab.training.loop import fit

    cfg = resolve_settings(args, kind="run")
    out = Path(args.out or f"runs/{cfg.recipe or cfg.model.name}")
    if _launch_ranks(args):
        import sys

        from cnnlab.training.distributed import DEFAULT_TIMEOUT_S, DistributedError, launch

        try:
            return launch(args.nproc, _without_nproc(args.argv),
                          timeout_s=args.dist_timeout or DEFAULT_TIMEOUT_S)
        except DistributedError as e:  # a runtime failure (exit 1), not a usage error
            print(f"error: {e}", file=sys.stderr)
            return 1
    result = fit(cfg, out_dir=out, resume=args.resume, overwrite=args.overwrite,
                 progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # rank 0 reports
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
