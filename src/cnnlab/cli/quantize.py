"""``cnnlab quantize CHECKPOINT --method static|dynamic|qat --out PATH``: INT8 ONNX."""

from __future__ import annotations

import argparse

from cnnlab.cli._util import Formatter, Parser, SubParsers


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    p = sub.add_parser(
        "quantize", parents=[common], formatter_class=formatter,
        help="quantise a model to INT8 (ONNX Runtime) with a parity report",
        description="Quantise a checkpoint to an INT8 ONNX file with ONNX Runtime and compare "
                    "it with FP32:\naccuracy change, top-1 agreement, size, batch-1 latency "
                    "and batch-1000 throughput.\n\n"
                    "  static   INT8 weights and activations (QDQ, per-channel weights); "
                    "activation ranges\n           calibrated on --calibration training "
                    "images (needs the training data)\n"
                    "  dynamic  INT8 weights, activations quantised at run time; no "
                    "calibration data\n"
                    "  qat      quantisation-aware training, for when static loses accuracy: "
                    "fine-tune the\n           model for --epochs on up to --qat-images "
                    "training images with INT8\n           rounding simulated, then quantise "
                    "it like static (needs the training\n           data; slower)",
        epilog="Examples:\n  cnnlab quantize runs/fast --out fast-int8.onnx\n"
               "  cnnlab quantize runs/fast --method qat --epochs 2 --out fast-qat.onnx")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="run directory, checkpoint, or `default` (the packaged MNIST model)")
    p.add_argument("--method", choices=["static", "dynamic", "qat"], default="static",
                   help="default: static; try qat when static loses accuracy")
    p.add_argument("--calibration", type=int, default=512, metavar="N",
                   help="static, qat: calibration images from the training split "
                        "(default: 512)")
    p.add_argument("--epochs", type=int, default=None, metavar="N",
                   help="qat: epochs of quantisation-aware training (default: 1)")
    p.add_argument("--qat-images", type=int, default=None, metavar="N",
                   help="qat: training images to fine-tune on (default: 60,000, all of "
                        "MNIST's; 10,000 measured worse than all on the fast model)")
    p.add_argument("--full-range", action="store_true",
                   help="8-bit weights instead of the default 7-bit (ONNX Runtime's "
                        "reduce_range); exact only on CPUs with VNNI and on ARM: on AVX2-only "
                        "x86 CPUs the INT8 sums saturate (the packaged model lost 0.10 points "
                        "there with it, none without)")
    p.add_argument("--out", required=True, metavar="PATH", help="the INT8 .onnx file to write")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the model's dataset is (default: the run's)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.cli._util import print_json
    from cnnlab.deploy.quantize import quantize_model
    from cnnlab.errors import ConfigError

    if args.method == "qat" and args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1 for --method qat (the passes of "
                          f"quantisation-aware training); got {args.epochs}")
    for flag, value in (("--epochs", args.epochs), ("--qat-images", args.qat_images)):
        if value is not None and args.method != "qat":
            raise ConfigError(f"{flag} applies to --method qat only (got --method "
                              f"{args.method})")
    r = quantize_model(args.checkpoint, args.out, method=args.method,
                       calibration=args.calibration, data_dir=args.data_dir,
                       qat_epochs=1 if args.epochs is None else args.epochs,
                       qat_images=60_000 if args.qat_images is None else args.qat_images,
                       reduce_range=not args.full_range,
                       progress=not args.quiet)
    if args.json:
        print_json(r)
        return 0
    t = r["timing"]
    acc = (f"accuracy {r['accuracy_fp32']:.2%} -> {r['accuracy_int8']:.2%} "
           f"({r['accuracy_change_points']:+.2f} points), " if "accuracy_int8" in r else "")
    if r["method"] == "qat":
        tuned = (f", fine-tuned FP32 {r['accuracy_qat_fp32']:.2%}"
                 if "accuracy_qat_fp32" in r else "")
        print(f"quantisation-aware training: {r['qat_epochs']} epoch(s) on {r['qat_images']:,} "
              f"training images, lr {r['qat_lr']:g}, {r['qat_time_s']:.1f} s{tuned}")
    bits = "7-bit weights" if r["reduce_range"] else "8-bit weights"
    print(f"wrote {r['out']} (INT8 {r['method']}, {bits}): {acc}top-1 agreement "
          f"{r['top1_agreement']:.2%} on {r['checked_on']}\n"
          f"size {r['fp32_bytes'] / 1e3:.0f} kB -> {r['int8_bytes'] / 1e3:.0f} kB "
          f"({r['size_ratio']}x smaller); batch-1 p50 {t['fp32']['latency_ms_p50']:.3f} ms -> "
          f"{t['int8']['latency_ms_p50']:.3f} ms ({r['latency_speedup']}x); batch-1000 "
          f"{t['fp32']['throughput_images_per_s']:,.0f} -> "
          f"{t['int8']['throughput_images_per_s']:,.0f} img/s ({r['throughput_speedup']}x)")
    torch_row = r.get("pytorch_int8")
    if torch_row and "error" in torch_row:
        print(f"PyTorch INT8 (x86): not available for this model: {torch_row['error']}")
    elif torch_row:
        acc = f"accuracy {torch_row['accuracy']:.2%}, " if "accuracy" in torch_row else ""
        wins = [f"batch {b}" for b, key in (("1", "batch1"), ("1000", "batch1000"))
                if torch_row["faster_than_ort_int8"][key]]
        verdict = (f"faster than ONNX Runtime INT8 at {' and '.join(wins)}" if wins else
                   "slower than ONNX Runtime INT8 at batch 1 and 1000")
        print(f"PyTorch INT8 (x86), for comparison: {acc}{torch_row['bytes'] / 1e3:.0f} kB, "
              f"batch-1 p50 {torch_row['latency_ms_p50']:.3f} ms, batch-1000 "
              f"{torch_row['throughput_images_per_s']:,.0f} img/s: {verdict}")
    return 0
