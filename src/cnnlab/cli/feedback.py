"""``cnnlab feedback stats|export``: what users confirmed and corrected."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cnnlab.cli._util import Formatter, Parser, SubParsers

if TYPE_CHECKING:
    from cnnlab.feedback.store import FeedbackStore

DEFAULT_STORE = "sqlite:///runs/serve/feedback.db"


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    p = sub.add_parser("feedback", formatter_class=formatter,
                       help="inspect or export the feedback a service collected",
                       description="The feedback store of `cnnlab serve`: accuracy on the "
                                   "predictions users checked, corrections, and the images.")
    verbs = p.add_subparsers(dest="feedback_verb", metavar="ACTION", required=True)
    stats = verbs.add_parser("stats", parents=[common], formatter_class=formatter,
                             help="accuracy on feedback, over time and per model version")
    stats.add_argument("--store", default=DEFAULT_STORE, metavar="URL",
                       help=f"database URL or SQLite file (default: {DEFAULT_STORE})")
    stats.add_argument("--model", default=None, metavar="CHECKPOINT",
                       help="also report the drift of the predicted classes from this "
                            "model's training data (e.g. default)")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(run=run_stats)
    export = verbs.add_parser("export", parents=[common], formatter_class=formatter,
                              help="write the feedback images as OUT/<label>/<id>.png")
    export.add_argument("--store", default=DEFAULT_STORE, metavar="URL",
                        help=f"database URL or SQLite file (default: {DEFAULT_STORE})")
    export.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    export.set_defaults(run=run_export)


def _store(url: str) -> FeedbackStore:
    from pathlib import Path

    from cnnlab.errors import ConfigError
    from cnnlab.feedback.store import FeedbackStore, store_url

    url = store_url(url)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        raise ConfigError(f"no feedback store at {url}; run `cnnlab serve` and send feedback "
                          "first, or pass --store")
    return FeedbackStore(url)


def run_stats(args: argparse.Namespace) -> int:
    from cnnlab.cli._util import print_json

    reference = None
    if args.model:
        from cnnlab.api import load
        from cnnlab.feedback.drift import reference_shares

        reference = reference_shares(load(args.model))
    with _store(args.store) as store:
        s = store.stats(reference=reference)
    if args.json:
        print_json(s)
        return 0
    if not s["feedback"]:
        print("no feedback yet")
        return 0
    print(f"{s['feedback']:,} feedback: {s['confirmed']:,} confirmed, {s['corrected']:,} "
          f"corrected; accuracy on feedback {s['accuracy']:.2%}")
    for version, v in s["by_model_version"].items():
        print(f"  model {version}: {v['feedback']:,} feedback, accuracy {v['accuracy']:.2%}")
    if s.get("predicted_drift") is not None:
        print(f"drift of the predicted classes from the training data (total variation): "
              f"{s['predicted_drift']:.3f}")
    if s["corrections"]:
        print("most common corrections: " + ", ".join(
            f"{k} ({n})" for k, n in list(s["corrections"].items())[:10]))
    return 0


def run_export(args: argparse.Namespace) -> int:
    with _store(args.store) as store:
        counts = store.export(args.out)
    total = sum(counts.values())
    print(f"wrote {total:,} images in {len(counts)} classes to {args.out}")
    return 0
