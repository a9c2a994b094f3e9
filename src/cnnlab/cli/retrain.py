"""``cnnlab retrain --from CHECKPOINT --feedback STORE --out RUN_DIR``: champion vs challenger."""

from __future__ import annotations

import argparse

from cnnlab.cli._util import Formatter, Parser, SubParsers, float_in


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    p = sub.add_parser(
        "retrain", parents=[common], formatter_class=formatter,
        help="fine-tune the served model on its feedback; promote it only if not worse",
        description="Fine-tune the champion on the feedback store's images plus a replay "
                    "sample of its original\ntraining data, hold part of the feedback out, "
                    "and compare challenger with champion on the\nchampion's validation split "
                    "(when it has one) and on the held-out feedback. The\nchallenger is "
                    "registered in the store's model registry and promoted only if it is not\n"
                    "worse on both; the test split is reported after the decision, never used "
                    "for it.\nA running service then picks it up with POST /v1/admin/reload.",
        epilog="Example: cnnlab retrain --from default --feedback sqlite:///runs/serve/"
               "feedback.db --out runs/retrain-1")
    p.add_argument("--from", dest="champion", default="default", metavar="CHECKPOINT",
                   help="the champion (default: default)")
    p.add_argument("--feedback", default="sqlite:///runs/serve/feedback.db", metavar="URL",
                   help="the feedback store (default: sqlite:///runs/serve/feedback.db)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="the challenger's run dir")
    p.add_argument("--replay", type=int, default=5000,
                   help="original training images mixed in (default: 5000)")
    p.add_argument("--holdout", type=float, default=0.2,
                   help="share of the feedback held out for the comparison (default: 0.2)")
    p.add_argument("--epochs", type=int, default=3, help="default: 3")
    p.add_argument("--lr", type=float_in(0, open_low=True), default=5e-4, help="default: 5e-4")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the champion's dataset is (default: its run's)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.cli._util import print_json
    from cnnlab.feedback.retrain import retrain

    r = retrain(args.champion, args.feedback, args.out, replay=args.replay,
                holdout=args.holdout, epochs=args.epochs, lr=args.lr, data_dir=args.data_dir,
                overwrite=args.overwrite, progress=not args.quiet)
    if args.json:
        print_json(r)
        return 0

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2%}"

    v, h, t = r["validation"], r["held_out_feedback"], r["test"]
    print(f"feedback {r['feedback']} ({r['feedback_held_out']} held out), replay "
          f"{r['replay']}: validation {pct(v['champion'])} -> {pct(v['challenger'])}, held-out "
          f"feedback {pct(h['champion'])} -> {pct(h['challenger'])} (these decide); test "
          f"{pct(t['champion'])} -> {pct(t['challenger'])} (reported)")
    print(f"version {r['version']}: " + ("promoted; reload a running service with POST "
                                         "/v1/admin/reload" if r["promoted"] else
                                         "not promoted (worse than the champion)"))
    return 0
