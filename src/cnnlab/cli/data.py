"""``cnnlab data info NAME`` and ``cnnlab data show NAME --out grid.png``."""

from __future__ import annotations

import argparse


def add_parser(sub, common, formatter) -> None:  # type: ignore[no-untyped-def]
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
    show.add_argument("--per-class", type=int, default=8,
                      help="images per class (default: 8)")
    show.add_argument("--seed", type=int, default=0, help="which samples (default: 0)")
    show.set_defaults(run=run_show)


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
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
