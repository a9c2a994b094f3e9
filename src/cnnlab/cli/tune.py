"""``cnnlab tune``: hyperparameter and architecture search (grid, random, TPE; pruning)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cnnlab.cli._util import SEED, Formatter, Parser, SubParsers, float_in

if TYPE_CHECKING:
    from cnnlab.tune.search import TuneSettings

SPACE_FORMAT = """\
Search space files (TOML; keys are dotted paths into the training config):
  objectives = ["val_accuracy"]          # or ["val_accuracy", "latency_ms" | "params"]
  [base]                                 # settings every trial shares
  data.limit = 5000
  [params]
  train.batch_size = [32, 64, 128]       # a choice
  optim.lr = { values = [0.001, 0.01], low = 1e-4, high = 0.1, log = true }
  model.depth = { low = 5, high = 15 }   # an int range (random, tpe)
  [models.paper-cnn]                     # optional: params for one model family only
  model.blocks = [1, 2, 3]
The grid sampler visits `values`; random and tpe search the range (or the choices)."""


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    from cnnlab.tune.space import SPACES

    spaces = "\n".join(f"  {name:8s} {spec['description']}" for name, spec in SPACES.items())
    p = sub.add_parser(
        "tune", parents=[common], formatter_class=formatter,
        help="search hyperparameters or architectures (grid, random, TPE)",
        description="Search a space of training settings with Optuna. The objective is the "
                    "validation accuracy\nof each trial's best epoch; weak trials are pruned "
                    "after each epoch (successive halving\nby default). The test split is held "
                    "back and used once, for the best configuration.\n\n"
                    "The study lives in --storage (default: DIR/study.db): rerun the same "
                    "command to continue\nan interrupted study; several commands (or "
                    "--workers N) can share one study, and no grid\npoint is evaluated twice. "
                    "Writes to --out: trials.csv, best.toml (`cnnlab train -c\nbest.toml` "
                    "trains the best configuration again), pareto.csv (two objectives), plots/,"
                    "\nreport.html, report.md, tune.json.\n\nBuilt-in spaces:\n" + spaces
                    + "\n\n" + SPACE_FORMAT,
        epilog="Examples:\n"
               "  cnnlab tune --space table3 --set model.width=8 --workers 2 --out runs/tune/grid"
               "\n  cnnlab tune --space table3 --sampler tpe --trials 60 --out runs/tune/tpe\n"
               "  cnnlab tune --space table3 --model paper-cnn --out runs/tune/paper-grid\n"
               "  cnnlab tune --space nas --trials 40 --out runs/tune/nas\n"
               "  cnnlab tune --space my-space.toml --budget-minutes 30 --out runs/tune/mine",
    )
    p.add_argument("--space", default="table3",
                   help="a built-in space name or a TOML file (default: table3)")
    p.add_argument("--sampler", choices=["grid", "random", "tpe"], default=None,
                   help="default: grid when every parameter lists values and there is one "
                        "objective, else tpe")
    p.add_argument("--pruner", choices=["sha", "hyperband", "median", "none"], default=None,
                   help="stop weak trials early: successive halving (sha), hyperband, median, "
                        "or none (default: sha; none with two objectives)")
    p.add_argument("--trials", type=int, default=None,
                   help="finished trials the study should reach, over all runs (default: the "
                        "grid's size; 50 for random and tpe)")
    p.add_argument("--budget-minutes", type=float, default=None, metavar="M",
                   help="start no new trial after M minutes (running ones finish)")
    p.add_argument("--objectives", default=None, metavar="LIST",
                   help="override the space's objectives, e.g. val_accuracy,params")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes sharing the study (default: 1); each gets "
                        "cores / N torch threads")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage URL (default: sqlite:///DIR/study.db)")
    p.add_argument("--study", default=None, metavar="NAME",
                   help="study name in the storage (default: the name of --out)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="results directory (default: runs/tune/<space>-<sampler>)")
    p.add_argument("--heartbeat", type=float_in(0, open_low=True), default=10.0, metavar="SECONDS",
                   help="how often a running trial says it is alive; the trial of a worker "
                        "that stopped beating for 3 heartbeats is run again (default: 10)")
    p.add_argument("--seed", type=SEED, default=0,
                   help="seed of the sampler and the grid order (default: 0); trials train "
                        "with train.seed")
    p.add_argument("--recipe", default=None, help="start every trial from a recipe")
    p.add_argument("-c", "--config", default=None, metavar="FILE", help="a TOML config file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for every trial, e.g. --set model.width=8 "
                        "(repeatable)")
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default=None, help="model family (default: convnet, whose depth, "
                                                 "width and kernel size the built-in spaces "
                                                 "search; table3 also maps its layers and "
                                                 "filter size onto paper-cnn's blocks and "
                                                 "kernel_size)")
    g.add_argument("--dataset", default=None, help="dataset name or image folder "
                                                   "(default: mnist)")
    g.add_argument("--data-dir", default=None, metavar="DIR", help="where the dataset files are")
    g.add_argument("--limit", type=int, default=None,
                   help="train every trial on a stratified subset of N images (the built-in "
                        "spaces use 5,000; 0 = all)")
    g.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads per worker")
    g.add_argument("--json", action="store_true", help="print tune.json's content")
    p.set_defaults(run=run)


def settings_from_args(args: argparse.Namespace) -> TuneSettings:
    """Resolve the flags into :class:`~cnnlab.tune.search.TuneSettings`.

    Raises:
        ConfigError: an invalid space, setting or combination of flags.
    """
    import dataclasses
    from pathlib import Path

    from cnnlab.config import flags_layer, load_config_file, parse_set, resolve_config
    from cnnlab.tune.search import TuneSettings, check_space
    from cnnlab.tune.space import load_space

    space = load_space(args.space)
    if args.objectives:
        space = space.with_objectives(tuple(o.strip() for o in args.objectives.split(",")))
    flags = {name: getattr(args, name) for name in
             ("model", "dataset", "data_dir", "limit", "device", "threads")}
    layers = [{"model": {"name": "convnet"}}, space.base,
              load_config_file(args.config) if args.config else {}, parse_set(args.set),
              flags_layer(flags)]
    base = resolve_config(*layers, recipe=args.recipe)
    space = space.for_model(base.model.name)  # the family's own knobs, if the space has them
    sampler = args.sampler or "auto"
    settings = TuneSettings(
        base=base, space=space, out=Path("."), sampler=sampler, pruner=args.pruner or "auto",
        trials=args.trials, budget_minutes=args.budget_minutes, storage=args.storage,
        study=args.study, workers=args.workers, seed=args.seed, heartbeat_s=args.heartbeat,
        progress=not args.quiet)
    out = Path(args.out or f"runs/tune/{space.name}-{settings.sampler_name}")
    settings = dataclasses.replace(settings, out=out)
    channels = base.data.channels or 1
    size = (base.data.image_size,) * 2 if base.data.image_size else (28, 28)
    check_space(space, base, channels=channels, size=size)
    return settings


def run(args: argparse.Namespace) -> int:
    from cnnlab.cli._util import print_json, table
    from cnnlab.tune.results import finish
    from cnnlab.tune.search import check_settings, run_study

    settings = settings_from_args(args)
    check_settings(settings)
    study = run_study(settings)
    summary = finish(study, settings)
    if args.json:
        print_json(summary)
        return _all_failed(settings, study, summary)
    from cnnlab.tune.results import headline

    print("\n".join(headline(summary)))
    _print_top(settings, study)
    if "pareto" in summary:
        rows = summary["pareto"]
        header = list(rows[0]) if rows else []
        print("\nPareto front:")
        print(table([[_cell(r[h]) for h in header] for r in rows], header))
    print(f"\nWrote {settings.out}/: trials.csv, report.html, report.md, plots/"
          + (", best.toml" if "best" in summary else "")
          + (", pareto.csv" if "pareto" in summary else ""))
    return _all_failed(settings, study, summary)


def _all_failed(settings: TuneSettings, study: Any, summary: dict[str, Any]) -> int:
    """1, with an error line, when the study has trials and every one of them failed."""
    import sys

    failed = summary["states"].get("fail", 0)
    if not failed or summary["finished"] or summary["states"].get("running"):
        return 0
    errors = [t.user_attrs["error"] for t in study.get_trials(deepcopy=False)
              if "error" in t.user_attrs]
    cause = f"the first with: {errors[0]}" if errors else "their workers stopped"
    print(f"error: every trial of study {settings.study_name!r} failed ({failed} trial(s); "
          f"{cause}); fix the cause and rerun the command: a study without a finished trial "
          f"starts again, with new settings too (trials: {settings.out / 'trials.csv'})",
          file=sys.stderr)
    return 1


def _print_top(settings: TuneSettings, study: Any, n: int = 10) -> None:
    """The best ``n`` trials by validation accuracy, as a table."""
    from cnnlab.cli._util import table
    from cnnlab.tune.results import trial_rows

    rows = [r for r in trial_rows(study, settings) if r["state"] == "complete"]
    if not rows:
        return
    rows.sort(key=lambda r: -r["val_accuracy"])
    keys = settings.space.keys
    header = ["trial", *keys, *settings.space.objectives, "epochs"]
    body = [[str(r["trial"]), *(_cell(r[k]) for k in keys),
             *(_cell(r[o]) for o in settings.space.objectives),
             str(r["epochs_run"])] for r in rows[:n]]
    title = f"\nTop {min(n, len(rows))} of {len(rows)} complete trials:"
    print(title)
    print(table(body, header))


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
