"""``cnnlab data info NAME`` and ``cnnlab data show NAME --out grid.png``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cnnlab.cli._util import SEED, Formatter, Parser, SubParsers, int_in

if TYPE_CHECKING:
    from cnnlab.data import ImageDataset


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    p = sub.add_parser("data", formatter_class=formatter, help="inspect a dataset",
                       description="Inspect a registered dataset (mnist, fashion-mnist, kmnist) "
                                   "or an image folder DIR/<class>/*.png.")
    verbs = p.add_subparsers(dest="data_verb", metavar="ACTION", required=True)

    def dataset_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("name", metavar="NAME_OR_DIR",
                       help="dataset name (mnist, fashion-mnist, kmnist) or an image folder")
        q.add_argument("--data-dir", default=None, metavar="DIR",
                       help="where the dataset files are (default: $CNNLAB_DATA_DIR, then "
                            "~/.cache/cnnlab/NAME)")
        q.add_argument("--split", choices=["train", "test"], default="train",
                       help="which split (default: train)")

    info = verbs.add_parser("info", parents=[common], formatter_class=formatter,
                            help="counts per class, shape, pixel mean and std")
    dataset_args(info)
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(run=run_info)

    show = verbs.add_parser("show", parents=[common], formatter_class=formatter,
                            help="write a labelled grid of sample images (the paper's Fig. 2)")
    dataset_args(show)
    show.add_argument("--out", default="grid.png", help="output PNG (default: grid.png)")
    show.add_argument("--per-class", type=int_in(1), default=8,
                      help="images per class (default: 8)")
    show.add_argument("--seed", type=SEED, default=0, help="which samples (default: 0)")
    show.set_defaults(run=run_show)

    export = verbs.add_parser(
        "export", parents=[common], formatter_class=formatter,
        help="write a dataset as an image folder OUT/<class>/*.png",
        description="Write a dataset as an image folder, OUT/<class>/<index>.png, for "
                    "fine-tuning and\nevaluation on folders. sklearn-digits is scikit-learn's "
                    "8x8 handwritten digits\n(1,797 images, shipped with scikit-learn, no "
                    "download); by default it is written in\nMNIST's form (28x28, the digit "
                    "fitted to 20x20 and centred by mass, white on black).",
        epilog="Examples:\n  cnnlab data export sklearn-digits --out data/sklearn-digits\n"
               "  cnnlab data export mnist --split test --limit 1000 --data-dir data "
               "--out mnist-test-1k")
    export.add_argument("name", metavar="NAME", help="sklearn-digits, or a registered dataset")
    export.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    export.add_argument("--form", choices=["mnist", "raw"], default="mnist",
                        help="sklearn-digits: mnist (28x28 MNIST form) or raw (8x8) "
                             "(default: mnist)")
    export.add_argument("--split", choices=["train", "test"], default="train",
                        help="registered datasets: which split (default: train)")
    export.add_argument("--data-dir", default=None, metavar="DIR",
                        help="registered datasets: where their files are")
    export.add_argument("--limit", type=int_in(0, note="0 = all"), default=0,
                         help="only the first N images (0 = all)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    export.set_defaults(run=run_export)


def _load(args: argparse.Namespace) -> ImageDataset:
    from pathlib import Path

    from cnnlab.data import DATASETS, load_dataset, load_image_folder

    if args.name in DATASETS:
        return load_dataset(args.name, args.split, data_dir=args.data_dir,
                            progress=not args.quiet)
    root = Path(args.name)
    if root.is_dir():
        if (root / args.split).is_dir():
            root = root / args.split
        return load_image_folder(root, progress=not args.quiet)
    from cnnlab.errors import DataError

    raise DataError(
        f"{args.name!r} is neither a registered dataset ({', '.join(DATASETS.names())}) nor a "
        "directory; pass a dataset name or an image folder laid out as DIR/<class>/*.png"
    )


def run_info(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from cnnlab.cli._util import print_json, table

    ds = _load(args)
    stats = ds.stats()
    if args.json:
        print_json({**asdict(stats), "split": args.split, "source": ds.source})
        return 0
    counts = stats.class_counts
    print(f"{ds.name} ({args.split}) from {ds.source}")
    print(f"images: {len(ds)}, shape (C, H, W): {stats.shape}, "
          f"pixel mean {_fmt(stats.mean)}, std {_fmt(stats.std)} (on [0, 1])\n")
    print(table([[c, str(n), f"{n / len(ds):.1%}"] for c, n in counts.items()],
                ["class", "images", "share"]))
    return 0


def _fmt(v: object) -> str:
    if isinstance(v, list | tuple):
        return "(" + ", ".join(f"{x:.4f}" for x in v) + ")"
    return f"{v:.4f}"


def run_show(args: argparse.Namespace) -> int:
    from cnnlab.data import sample_grid

    ds = _load(args)
    path = sample_grid(ds, args.out, per_class=args.per_class, seed=args.seed)
    print(f"wrote {path}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from cnnlab.data.export import export_dataset

    counts = export_dataset(args.name, args.out, form=args.form, split=args.split,
                            data_dir=args.data_dir, limit=args.limit, overwrite=args.overwrite,
                            progress=not args.quiet)
    total = sum(counts.values())
    per_class = ", ".join(f"{c}: {n}" for c, n in counts.items())
    print(f"wrote {total:,} images in {len(counts)} classes to {args.out} ({per_class})")
    return 0
