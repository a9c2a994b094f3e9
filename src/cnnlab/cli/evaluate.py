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
    p.add_argument("checkpoint", metavar="RUN_DIR_OR_CHECKPOINT",
                   help="run directory, checkpoint, or `default` (the packaged MNIST model)")
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

    import torch.nn.functional as F

    from cnnlab.api import load
    from cnnlab.cli._util import print_json, table
    from cnnlab.device import resolve_device
    from cnnlab.evaluate import classification_report, measure_inference, predict_logits
    from cnnlab.evaluate.report import _load_split, build_report

    device = resolve_device(args.device)
    model = load(args.checkpoint, device=device)
    # the same loading, resizing and checks as the report
    ds, name = _load_split(model, args.dataset, args.data_dir, args.split, not args.quiet)
    spec = model.input_spec
    if args.report:
        # the report evaluates the same split: take its figures instead of a second pass
        ev = build_report(model.path or args.checkpoint, dataset=ds, split=args.split,
                          device=device, batch_size=args.batch_size, progress=not args.quiet)
        report = {k: ev[k] for k in ("accuracy", "macro", "weighted", "per_class",
                                     "confusion_matrix", "samples")}
        report["loss"] = ev["log_loss"]
        timing = {k: ev["efficiency"][k] for k in (
            "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "throughput_images_per_s",
            "throughput_batch_size")}
        elapsed = None
    else:
        t0 = time.perf_counter()
        logits = predict_logits(model.classifier, ds.images, spec.mean, spec.std,
                                batch_size=args.batch_size, device=device)
        elapsed = time.perf_counter() - t0
        report = classification_report(ds.targets, logits.argmax(1), model.classes)
        report["loss"] = F.cross_entropy(logits, ds.targets).item()
        timing = measure_inference(model.classifier, spec.shape, device=device,
                                   latency_runs=100, batch_size=min(1000, max(1, len(ds))),
                                   throughput_runs=3)
        timing["dataset_pass_s"] = round(elapsed, 3)
    result = {"checkpoint": model.path, "dataset": name, "split": args.split, **report,
              "timing": timing}
    if args.report:
        result["report"] = ev["files"]["html"]
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
          f"{timing['throughput_images_per_s']:,.0f} img/s"
          + (f"; whole split {elapsed:.2f} s" if elapsed is not None else ""))
    if result.get("report"):
        print(f"report: {result['report']}")
    return 0
