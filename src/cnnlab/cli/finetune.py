"""``cnnlab finetune SOURCE --train-dir DIR --out RUN_DIR``: adapt a model to an image folder."""

from __future__ import annotations

import argparse

from cnnlab.cli._util import SEED, Formatter, Parser, SubParsers

HELP = """\
SOURCE is a run directory or checkpoint (for example the MNIST model of `cnnlab train`),
a pretrained-weights name (alexnet, vgg11, vgg16: torchvision's ImageNet files, looked up in
$TORCH_HOME/hub/checkpoints, default ~/.cache/torch, and downloaded with a hash check unless
$CNNLAB_OFFLINE=1), or a torchvision-format .pth file (--arch names its architecture when the
file name does not).

Adaptation: images go through the preprocessing the new checkpoint records, so `cnnlab
predict`, `cnnlab evaluate` and `cnnlab serve` see every file as training did. From a digit
model (the MNIST models, `default`): each image is brought to MNIST form (polarity detected,
cropped to the ink, fitted to 20x20, centred by mass) when the folder looks like digits on
paper; a folder of colour images or pictures is resized instead, and the log says so
(--preprocess chooses). Images are converted to the source's channels and size
(--image-size for pretrained weights); ImageNet weights take grey folders by folding their
first layer to one channel. The head is kept when the folder's classes are the source's
(same names, e.g. another digits dataset) and replaced otherwise. Normalisation comes from the
source and is stored in the checkpoint, so `cnnlab predict` and `cnnlab evaluate` apply it.

Strategies:
  finetune        every layer trains at one learning rate (default)
  linear          only the last layer trains; the frozen features are computed once and
                  cached, so an epoch takes milliseconds (no augmentation then)
  gradual         the last layer first, then one more layer from the top at even intervals
  discriminative  every layer trains, earlier layers at lr * lr-decay ** depth-from-top

Defaults for few images, and why:
  --shots K       K images per class are drawn (seeded) for training; the rest of the
                  folder is the test split, so the result says how well K labels generalise
  test split      --test-dir, the images --shots leaves, or else --test-fraction (20 %) of
                  the folder, stratified and seeded; splits.json in the run lists the files
  validation      20 % of the training images when every class has at least 30, else none:
                  a handful of images per class is too few to steer by and too valuable to
                  hold back, so training runs a fixed schedule and keeps the last epoch
  early stopping  off: with 10 shots per class it stopped after about 30 steps, still
                  improving, and never helped in a sweep scored on validation images
                  (benchmarks/bench_fewshot.py); --early-stopping N turns it on
  epochs          about 300 optimiser steps (10-200 epochs): few images need many passes
  augmentation    on: rotation +-10 degrees, scale 0.9-1.1, shifts of 10 %; horizontal flips
                  only for RGB images with ImageNet weights (never for digits)
  lr              Adam with a cosine schedule: 1e-3 from a cnnlab model, 1e-4 from ImageNet
                  weights (large pretrained layers need small steps), 1e-2 for linear"""


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    from cnnlab.training.finetune import STRATEGIES

    p = sub.add_parser(
        "finetune", parents=[common], formatter_class=formatter,
        help="adapt a trained or pretrained model to an image folder (transfer learning)",
        description="Fine-tune a model on an image folder DIR/<class>/*.png and write a run "
                    "directory\n(model.pt, config.toml, history.csv, metrics.json, "
                    "finetune.json, report.html).\n\n" + HELP,
        epilog="Examples:\n"
               "  cnnlab data export sklearn-digits --out data/sklearn-digits\n"
               "  cnnlab finetune runs/fast --train-dir data/sklearn-digits --shots 10 "
               "--out runs/ft-digits\n"
               "  cnnlab finetune alexnet --train-dir photos/ --strategy linear --out runs/ft-"
               "alexnet\n"
               "  cnnlab finetune weights.pth --arch vgg11 --train-dir photos/ --image-size 64 "
               "--out runs/ft-vgg")
    p.add_argument("source", metavar="SOURCE",
                   help="run directory, checkpoint, `default`, pretrained name or .pth file")
    p.add_argument("--train-dir", required=True, metavar="DIR",
                   help="training images, one folder per class")
    p.add_argument("--val-dir", default=None, metavar="DIR",
                   help="validation images (default: a slice of the training images)")
    p.add_argument("--test-dir", default=None, metavar="DIR",
                   help="test images (default: with --shots, the images not drawn)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--shots", type=int, default=0, metavar="K",
                   help="train on K images per class (default: all)")
    p.add_argument("--test-fraction", type=float, default=0.2, metavar="F",
                   help="without --test-dir or --shots: the share of the folder held out as "
                        "the test split (default: 0.2)")
    p.add_argument("--preprocess", choices=["mnist-digits", "resize"], default=None,
                   help="how files become input (default: the source's: mnist-digits for "
                        "digit models on digit-like folders, else resize)")
    p.add_argument("--strategy", choices=STRATEGIES, default="finetune",
                   help="default: finetune (see above)")
    p.add_argument("--scratch", action="store_true",
                   help="same architecture, data and schedule from random weights: the "
                        "baseline fine-tuning should beat")
    p.add_argument("--arch", default=None,
                   help="architecture of a .pth file whose name does not say it")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=0, help="default: auto (about 300 steps)")
    g.add_argument("--batch-size", type=int, default=32, help="default: 32")
    g.add_argument("--lr", type=float, default=0.0, help="peak learning rate (default: auto)")
    g.add_argument("--lr-decay", type=float, default=0.7,
                   help="discriminative: learning-rate factor per layer going down "
                        "(default: 0.7)")
    g.add_argument("--val-fraction", type=float, default=None,
                   help="validation slice of the training images (default: auto)")
    g.add_argument("--early-stopping", type=int, default=0, metavar="EPOCHS",
                   help="stop after EPOCHS without validation gain (default: 0 = off)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="default: on (off for the cached linear strategy)")
    g.add_argument("--feature-cache", action=argparse.BooleanOptionalAction, default=True,
                   help="linear: compute frozen features once (default: on)")
    g.add_argument("--image-size", type=int, default=0,
                   help="input size for pretrained weights (default: the weights' size, 224; "
                        "alexnet runs from 8, vgg from 32)")
    g.add_argument("--seed", type=SEED, default=0, help="default: 0")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: all)")
    g.add_argument("--download", action=argparse.BooleanOptionalAction, default=None,
                   help="fetch missing pretrained weights (default: on unless "
                        "$CNNLAB_OFFLINE=1)")
    g.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="write report.html for the test split (default: on)")
    g.add_argument("--json", action="store_true", help="print metrics and settings as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.cli._util import print_json
    from cnnlab.training.finetune import FinetuneSettings, finetune

    s = FinetuneSettings(
        source=args.source, train_dir=args.train_dir, out=args.out, val_dir=args.val_dir,
        test_dir=args.test_dir, shots=args.shots, strategy=args.strategy, scratch=args.scratch,
        arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        val_fraction=args.val_fraction, augment=args.augment,
        early_stopping=args.early_stopping, lr_decay=args.lr_decay,
        image_size=args.image_size, preprocess=args.preprocess or "",
        test_fraction=args.test_fraction, feature_cache=args.feature_cache, seed=args.seed,
        device=args.device, threads=args.threads, download=args.download,
        overwrite=args.overwrite, progress=not args.quiet)
    result = finetune(s)
    report = None
    if args.report and result.test is not None:
        from cnnlab.evaluate.report import build_report

        ev = build_report(result.out / "model.pt", dataset=result.test, split="test",
                          progress=not args.quiet)
        report = ev["files"]["html"]
    m, info = result.metrics, result.info
    if args.json:
        print_json({"run_dir": str(result.out), **info, "metrics": m, "report": report})
        return 0
    print(f"{info['arch']} from {info['source'].get('source')}: {info['strategy']}"
          + (" from scratch" if info["scratch"] else "") + f", head {info['head']}, "
          f"{info['train_images']} training / {info['val_images']} validation / "
          f"{info['test_images']} test images, {m['epochs_run']} epochs in "
          f"{m['train_time_s']:.1f} s")
    for split in ("val", "test"):
        if f"{split}_accuracy" in m:
            print(f"{split} accuracy {m[f'{split}_accuracy']:.2%} "
                  f"({m[f'{split}_images']:,} images)")
    print(f"wrote {result.out}/" + (f" (report: {report})" if report else ""))
    return 0
