"""``cnnlab export CHECKPOINT --format onnx|torchscript --out PATH``."""

from __future__ import annotations

import argparse

from cnnlab.cli._util import Formatter, Parser, SubParsers, int_in


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    p = sub.add_parser(
        "export", parents=[common], formatter_class=formatter,
        help="export a model to ONNX or TorchScript, checked against PyTorch",
        description="Export a checkpoint (or run directory) to one file: ONNX (weights "
                    "embedded, dynamic batch,\nthe opset and cnnlab's preprocessing metadata "
                    "inside) or TorchScript. After every export\nthe file runs on the model's "
                    "test split and is compared with PyTorch: the largest logit\ndifference "
                    "must be <= 1e-4 and every top-1 class the same, or the export fails and "
                    "the\nfile is removed.",
        epilog="Examples:\n  cnnlab export runs/fast --out fast.onnx\n"
               "  cnnlab export runs/fast --format torchscript --out fast.ts")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="run directory, checkpoint, or `default` (the packaged MNIST model)")
    p.add_argument("--format", dest="fmt", choices=["onnx", "torchscript"], default="onnx",
                   help="default: onnx")
    p.add_argument("--out", required=True, metavar="PATH", help="the file to write")
    p.add_argument("--opset", type=int_in(1), default=17, help="ONNX opset (default: 17)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the model's dataset is, for the parity check (default: the "
                        "run's)")
    p.add_argument("--json", action="store_true", help="print the parity report as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.cli._util import print_json
    from cnnlab.deploy.onnx import export_model

    r = export_model(args.checkpoint, args.out, fmt=args.fmt, opset=args.opset,
                     data_dir=args.data_dir)
    if args.json:
        print_json(r)
        return 0
    acc = (f"; accuracy {r['accuracy_pytorch']:.2%} (PyTorch) = {r['accuracy_exported']:.2%}"
           if "accuracy_exported" in r else "")
    print(f"wrote {r['out']} ({r['format']}, {r['bytes'] / 1e6:.2f} MB). Parity on "
          f"{r['checked_on']} ({r['images']:,} images): max abs logit difference "
          f"{r['max_abs_diff']:.2g}, top-1 agreement {r['top1_agreement']:.2%}{acc}")
    return 0
