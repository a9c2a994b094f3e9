"""``cnnlab models`` and ``cnnlab summary``... the listing half: registered model families."""

from __future__ import annotations

import argparse

from cnnlab.cli._util import Formatter, Parser, SubParsers, print_json, table


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    p = sub.add_parser("models", parents=[common], formatter_class=formatter,
                       help="list the registered models",
                       description="List the registered model families with their parameter "
                                   "count at MNIST's 1x28x28 input.")
    p.add_argument("--all", action="store_true", help="include the tiny test variants")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.models import MODELS, create_model

    rows = []
    for entry in MODELS:
        if entry.tags.get("tiny") and not args.all:
            continue
        model = create_model(entry.name)
        params = sum(p.numel() for p in model.parameters())
        rows.append({"name": entry.name, "parameters": params, "description": entry.description,
                     "tiny": bool(entry.tags.get("tiny"))})
    if args.json:
        print_json({"models": rows})
        return 0
    print(table([[str(r["name"]), f"{r['parameters']:,}", str(r["description"])] for r in rows],
                ["model", "params (1x28x28)", "description"], "lrl"))
    print("\nShow a model's layers: cnnlab summary NAME --input 1x28x28")
    return 0
