"""``cnnlab compare``: CNNs against traditional baselines on one seeded split, as one table."""

from __future__ import annotations

import argparse
import textwrap

from cnnlab.cli._util import SEED, Formatter, Parser, SubParsers, int_in

DEFAULT_MODELS = "paper-cnn,lenet5"
DEFAULT_BASELINES = "hog-svm,pixels-knn"


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    p = sub.add_parser(
        "compare", parents=[common], formatter_class=formatter,
        help="compare CNNs with traditional baselines on the same split",
        description=textwrap.fill(
            "Train every CNN and fit every traditional baseline (handcrafted features with an "
            "SVM, k-NN, decision tree or random forest) on one identical, seeded split, score "
            "all on the test split and write one table (accuracy with a bootstrap 95 % "
            "interval, macro F1, training time, batch-1 latency, parameters, size) as "
            "compare.md, compare.html and compare.csv, an accuracy-versus-latency plot "
            "(compare.png) and pairwise McNemar p-values (mcnemar.csv). On MNIST, published "
            "figures follow as rows marked 'literature', never mixed with our runs.", 96)
        + "\n\nBaselines (<feature>-<classifier>): hog-svm, deskew-hog-svm, pixels-svm, "
          "pixels-knn,\n  hog-knn, edges-tree, hog-forest, pixels-forest.",
        epilog="Examples:\n"
               "  cnnlab compare --data-dir data --limit 10000 --epochs 3 --out runs/compare\n"
               "  cnnlab compare --models paper-cnn,lenet5,resnet,alexnet "
               "--baselines hog-svm,pixels-knn,edges-tree,hog-forest --max-train-baseline "
               "10000")
    p.add_argument("--models", default=DEFAULT_MODELS, metavar="A,B",
                   help=f"comma-separated CNN names, see `cnnlab models`; '' for none "
                        f"(default: {DEFAULT_MODELS})")
    p.add_argument("--baselines", default=DEFAULT_BASELINES, metavar="A,B",
                   help=f"comma-separated baseline names; '' for none "
                        f"(default: {DEFAULT_BASELINES})")
    p.add_argument("--dataset", default="mnist", help="dataset name (default: mnist)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the dataset files are (default: $CNNLAB_DATA_DIR, then "
                        "~/.cache/cnnlab/NAME)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="train every entry on the same stratified subset of N images "
                        "(default: all)")
    p.add_argument("--max-train-baseline", type=int_in(1), default=None, metavar="N",
                   help="fit the baselines on at most N of those images; kernel SVMs grow "
                        "quadratically with N (default: the same images as the CNNs)")
    p.add_argument("--epochs", type=int, default=None,
                   help="CNN epochs (default: the recipe's, 20 without one)")
    p.add_argument("--recipe", default=None,
                   help="CNN training recipe, e.g. paper (default: none, the config defaults)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a CNN config key, e.g. --set optim.lr=0.01 (repeatable)")
    p.add_argument("--seed", type=SEED, default=0,
                   help="split, subset, initialisation and baseline seed (default: 0)")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda for the CNNs (default: cpu)")
    p.add_argument("--no-literature", action="store_true",
                   help="leave out the published reference rows (default: shown on mnist)")
    p.add_argument("--out", default="runs/compare", metavar="DIR",
                   help="output directory (default: runs/compare)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (settings, rows, literature, McNemar p-values)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from cnnlab.cli._util import print_json, table
    from cnnlab.config import parse_set
    from cnnlab.evaluate.compare import compare

    result = compare(
        _names(args.models), _names(args.baselines), dataset=args.dataset,
        data_dir=args.data_dir, seed=args.seed, epochs=args.epochs, recipe=args.recipe,
        overrides=parse_set(args.set) or None, limit=args.limit,
        max_train_baseline=args.max_train_baseline, device=args.device, out_dir=args.out,
        literature=False if args.no_literature else None, progress=not args.quiet)
    if args.json:
        print_json(json.loads(result.files["json"].read_text(encoding="utf-8")))
        return 0
    rows = [[r["name"], r["kind"], f"{r['accuracy']:.2%}",
             f"[{r['accuracy_low']:.2%}, {r['accuracy_high']:.2%}]", f"{r['macro_f1']:.4f}",
             f"{r['train_time_s']:.1f}", f"{r['latency_ms']:.3f}", f"{r['parameters']:,}",
             f"{r['size_mb']:.3f}"] for r in result.rows]
    rows += [[r["name"], "literature", f"{r['accuracy']:.2%}", "", "", "", "", "", ""]
             for r in result.literature]
    print(table(rows, ["entry", "kind", "accuracy", "95 % CI", "macro F1", "train s",
                       "latency ms", "params", "MB"], align="llrrrrrrr"))
    print(f"\nliterature rows are published figures, not our runs; files in {args.out}/: "
          "compare.md, compare.html, compare.csv, compare.png, mcnemar.csv")
    return 0
