"""``cnnlab summary NAME --input CxHxW``: a Keras-like layer table."""

from __future__ import annotations

import argparse

from cnnlab.cli._util import Formatter, Parser, SubParsers, parse_shape, print_json


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    p = sub.add_parser("summary", parents=[common], formatter_class=formatter,
                       help="print a model's layers, output shapes, parameters and MACs",
                       description="Print a Keras-like table of a model: layer, output shape, "
                                   "parameters, multiply-accumulates; totals and size in MB.",
                       epilog="Example: cnnlab summary paper-cnn --input 3x224x224 "
                              "(reproduces the paper's Table II)")
    p.add_argument("model", metavar="NAME_OR_CHECKPOINT",
                   help="a model name (see `cnnlab models`), a checkpoint/run directory, or "
                        "`default` (the packaged MNIST model)")
    p.add_argument("--input", default=None, metavar="CxHxW",
                   help="input shape, e.g. 1x28x28 or 3x224x224 (default: 1x28x28, or the "
                        "checkpoint's input)")
    p.add_argument("--num-classes", type=int, default=10, help="output classes (default: 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnlab.models import MODELS, create_model
    from cnnlab.models.summary import format_summary, summarize

    if args.model not in MODELS and (Path(args.model).exists() or args.model.endswith(".pt")
                                     or args.model == "default"):
        from cnnlab.api import load

        model = load(args.model).classifier
        shape = parse_shape(args.input) if args.input else model.input_spec.shape
    else:
        shape = parse_shape(args.input or "1x28x28")
        model = create_model(args.model, in_channels=shape[0], num_classes=args.num_classes,
                             input_size=(shape[1], shape[2]))
    summary = summarize(model, shape)
    if args.json:
        print_json(summary.to_dict())
    else:
        print(format_summary(summary))
    return 0
