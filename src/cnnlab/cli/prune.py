"""``cnnlab prune CHECKPOINT --method magnitude|channel --amount A --out RUN_DIR``: prune a
trained model and fine-tune it back."""

from __future__ import annotations

import argparse

from cnnlab.cli._util import Formatter, Parser, SubParsers, float_in, int_in

HELP = """\
CHECKPOINT is a run directory or a model.pt of `cnnlab train` (or of an earlier prune). The
pruned model is fine-tuned for --finetune-epochs with the source run's own settings
(optimiser, schedule, batch size, label smoothing) on the source run's dataset, and written
as a new run directory that `cnnlab evaluate`, `cnnlab predict` and `cnnlab.load` read like
any other.

Methods:
  magnitude  the --amount fraction of smallest weights (one global L1 threshold over every
             conv and linear weight, the output layer's too unless --keep-head; biases and
             batch norm are kept) become exactly zero and stay zero while fine-tuning.
             Every tensor keeps its shape: the checkpoint is as large as before and a dense
             runtime is as fast as before; the gain comes from compression (gzip/zip of
             model.pt) or sparse kernels. Works with every model.
  channel    the --amount fraction of output channels of every conv (and of hidden units of
             a dense layer) with the smallest batch-norm scale |gamma| (the filter's L1 norm
             without batch norm) is removed, and the layer after is shrunk to match (the next
             conv's inputs; the flatten head's columns). The result is a smaller model of the
             same family (convnet with smaller widths, paper-cnn with fewer filters/hidden
             units): fewer parameters, fewer MACs, lower latency with any runtime.
             Supports convnet (not residual) and paper-cnn.

The report (printed, and prune.json in RUN_DIR) gives sparsity, parameters and MACs before and
after, and the test accuracy of the source, of the pruned model and after fine-tuning."""


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    from cnnlab.deploy.prune import METHODS, SCOPES

    p = sub.add_parser(
        "prune", parents=[common], formatter_class=formatter,
        help="make a trained model sparse (magnitude) or smaller (channel), then fine-tune it",
        description="Prune a trained model and fine-tune it; write a run directory\n(model.pt, "
                    "config.toml, history.csv, metrics.json, prune.json).\n\n" + HELP,
        epilog="Examples:\n"
               "  cnnlab prune runs/fast --method magnitude --amount 0.8 --out runs/fast-m80\n"
               "  cnnlab prune runs/fast --method channel --amount 0.5 --finetune-epochs 1 "
               "--out runs/fast-c50")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="run directory, checkpoint, or `default` (the packaged MNIST model)")
    p.add_argument("--method", choices=METHODS, default="magnitude",
                   help="magnitude (zeros, same size) or channel (a smaller model); "
                        "default: magnitude")
    p.add_argument("--amount", type=float, required=True, metavar="A",
                   help="fraction to prune, in [0, 1): of the weights (magnitude) or of each "
                        "layer's channels (channel)")
    p.add_argument("--finetune-epochs", type=int, default=2, metavar="N",
                   help="fine-tuning epochs after pruning (default: 2; 0 = none)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the source's data is: the data directory of a registered "
                        "dataset, or the image folder itself (default: the source run's)")
    p.add_argument("--scope", choices=SCOPES, default="global",
                   help="magnitude: one threshold over all layers (global) or the same "
                        "fraction of each layer (layer); default: global")
    p.add_argument("--keep-head", action="store_true",
                   help="magnitude: leave the output layer unpruned")
    p.add_argument("--lr", type=float_in(0, open_low=True), default=None,
                   help="peak fine-tuning learning rate (default: the source run's)")
    p.add_argument("--threads", type=int_in(0, note="0 = the source run's setting"), default=0,
                   help="CPU threads for torch while pruning and fine-tuning (default: the "
                        "source run's train.threads, else torch's choice)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.cli._util import print_json
    from cnnlab.deploy.prune import prune_checkpoint
    from cnnlab.errors import ConfigError

    if args.method == "channel" and (args.scope != "global" or args.keep_head):
        raise ConfigError("--scope and --keep-head (scope, include_head) are options of "
                          "magnitude pruning; channel pruning removes the amount of every "
                          "layer's channels but the output layer's")
    r = prune_checkpoint(args.checkpoint, method=args.method, amount=args.amount,
                         finetune_epochs=args.finetune_epochs, data_dir=args.data_dir,
                         out=args.out, overwrite=args.overwrite, progress=not args.quiet,
                         scope=args.scope, include_head=not args.keep_head, lr=args.lr,
                         threads=args.threads)
    if args.json:
        print_json(r)
        return 0
    p, m, a = r["params"], r["macs"], r["accuracy"]
    what = ("zero weights" if r["method"] == "magnitude" else "of the pruned layers' weights "
            "removed")
    print(f"{r['method']} pruning of {r['source']} at amount {r['amount']:g}: "
          f"{r['sparsity']:.1%} {what}")
    print(f"parameters {p['before']:,} -> {p['after']:,} ({p['nonzero_after']:,} non-zero), "
          f"MACs {m['before']:,} -> {m['after']:,}")
    if a["source"] is not None:
        line = (f"{r['eval_split']} accuracy ({r['eval_images']:,} images): source "
                f"{a['source']:.2%}, pruned {a['pruned']:.2%}")
        if a["finetuned"] is not None:
            line += f", fine-tuned {r['finetune_epochs']} epoch(s) {a['finetuned']:.2%}"
        print(line)
    print(f"wrote {r['run_dir']}/ (model.pt, prune.json)")
    return 0
