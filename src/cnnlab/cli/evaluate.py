"""``cnnlab evaluate RUN_DIR_OR_CHECKPOINT``: accuracy, per-class figures, confusion matrix,
inference time."""

from __future__ import annotations

import argparse


def add_parser(sub, common, formatter) -> None:  # type: ignore[no-untyped-def]
    p = sub.add_parser(
        "evaluate", parents=[common], formatter_class=formatter,
        help="measure a trained model on a dataset split",
        description="Evaluate a checkpoint (or a run directory's model.pt) on a dataset split: "
                    "accuracy, per-class precision, recall and F1, confusion matrix, inference "
                    "time.",
        epilog="Example: cnnlab evaluate runs/fast --json")
    p.add_argument("checkpoint", metavar="RUN_DIR_OR_CHECKPOINT")
    p.add_argument("--dataset", default=None,
                   help="dataset name or image folder (default: the one the model was trained on)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the dataset files are (default: the training run's)")
    p.add_argument("--split", choices=["train", "test"], default="test",
                   help="which split (default: test)")
    p.add_argument("--batch-size", type=int, default=1000, help="default: 1000")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda (default: cpu)")
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="also write report.html, report.md and plots/ next to the checkpoint "
                        "(default: on)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (accuracy as a fraction, per_class, "
                        "confusion_matrix, timing)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import torch.nn.functional as F

    from cnnlab.api import load
    from cnnlab.cli._util import print_json, table
    from cnnlab.data import DATASETS, load_dataset, load_image_folder
    from cnnlab.device import resolve_device
    from cnnlab.errors import DataError
    from cnnlab.evaluate import classification_report, measure_inference, predict_logits

    device = resolve_device(args.device)
    model = load(args.checkpoint, device=device)
    data_cfg = model.config.get("data", {})
    name = args.dataset or data_cfg.get("dataset", "mnist")
    data_dir = args.data_dir or data_cfg.get("data_dir") or None
    spec = model.input_spec
    if name in DATASETS:
        ds = load_dataset(name, args.split, data_dir=data_dir, progress=not args.quiet)
    else:
        root = Path(name)
        if (root / args.split).is_dir():
            root = root / args.split
        ds = load_image_folder(root, channels=spec.channels, size=(spec.height, spec.width),
                               progress=not args.quiet)
    if tuple(ds.images.shape[1:]) != spec.shape:
        raise DataError(f"{name} {args.split} images have shape {tuple(ds.images.shape[1:])} but "
                        f"the model expects {spec.shape}")
    if ds.classes != model.classes:
        raise DataError(f"{name} has classes {ds.classes} but the model was trained on "
                        f"{model.classes}")
    t0 = time.perf_counter()
    logits = predict_logits(model.classifier, ds.images, spec.mean, spec.std,
                            batch_size=args.batch_size, device=device)
    elapsed = time.perf_counter() - t0
    report = classification_report(ds.targets, logits.argmax(1), model.classes)
    report["loss"] = F.cross_entropy(logits, ds.targets).item()
    timing = measure_inference(model.classifier, spec.shape, device=device, latency_runs=100,
                               batch_size=min(1000, max(1, len(ds))), throughput_runs=3)
    timing["dataset_pass_s"] = round(elapsed, 3)
    result = {"checkpoint": model.path, "dataset": name, "split": args.split, **report,
              "timing": timing}
    if args.report:
        from cnnlab.evaluate.report import build_report

        files = build_report(args.checkpoint, dataset=args.dataset, data_dir=args.data_dir,
                             split=args.split, device=args.device, batch_size=args.batch_size,
                             progress=not args.quiet)["files"]
        result["report"] = files["html"]
    if args.json:
        print_json(result)
        return 0
    print(f"{model.path}: {name} {args.split}, {report['samples']:,} images")
    print(f"accuracy {report['accuracy']:.2%}   macro F1 {report['macro']['f1']:.4f}   "
          f"loss {report['loss']:.4f}\n")
    rows = [[c, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['specificity']:.4f}",
             f"{v['f1']:.4f}", str(v["support"])] for c, v in report["per_class"].items()]
    print(table(rows, ["class", "precision", "recall", "specificity", "f1", "support"]))
    print("\nconfusion matrix (rows: true class, columns: predicted)")
    cm = report["confusion_matrix"]
    print(table([[c, *map(str, row)] for c, row in zip(model.classes, cm, strict=True)],
                ["", *model.classes]))
    print(f"\ninference: batch 1 p50 {timing['latency_ms_p50']:.3f} ms "
          f"(p95 {timing['latency_ms_p95']:.3f}), batch {timing['throughput_batch_size']} "
          f"{timing['throughput_images_per_s']:,.0f} img/s; whole split {elapsed:.2f} s")
    if result.get("report"):
        print(f"report: {result['report']}")
    return 0
