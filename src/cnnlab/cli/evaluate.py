"""``cnnlab evaluate RUN_DIR_OR_CHECKPOINT``: accuracy, per-class figures, confusion matrix,
inference time."""

from __future__ import annotations

import argparse

from cnnlab.cli._util import Formatter, Parser, SubParsers

ENGINE_CHOICES = ("auto", "torch", "onnx", "int8", "all")


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    p = sub.add_parser(
        "evaluate", parents=[common], formatter_class=formatter,
        help="measure a trained model on a dataset split",
        description="Evaluate a checkpoint (or a run directory's model.pt) on a dataset split: "
                    "accuracy, per-class precision, recall and F1, confusion matrix, inference "
                    "time.\n\nImages go through the preprocessing the checkpoint records, the "
                    "same as `cnnlab predict` and `cnnlab serve`, and the logits come from the "
                    "same engine (--engine). Without --dataset or --data-dir the run's own test "
                    "split is used (for a folder run: the files splits.json lists). Other data "
                    "is external: all of a folder (or its test/ folder) is evaluated, and the "
                    "report goes to RUN/eval/<name>/, never over the run's own.",
        epilog="Examples:\n  cnnlab evaluate runs/fast --json\n"
               "  cnnlab evaluate default --data-dir scans/ --engine all")
    p.add_argument("checkpoint", metavar="RUN_DIR_OR_CHECKPOINT",
                   help="run directory, checkpoint, or `default` (the packaged MNIST model)")
    p.add_argument("--dataset", default=None,
                   help="dataset name or image folder (default: the one the model was trained on)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the dataset files are (default: the training run's), or an image "
                        "folder DIR/<class>/*.png to evaluate")
    p.add_argument("--split", choices=["train", "val", "test"], default="test",
                   help="which split of the run's own data (default: test)")
    p.add_argument("--engine", choices=ENGINE_CHOICES, default="auto",
                   help="what computes the logits: as `cnnlab predict --engine`; all: the report "
                        "on auto's engine plus every engine's accuracy and agreement side by "
                        "side (default: auto)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where to write the report (default: the run directory for its own "
                        "data, RUN/eval/<name>/ for other data)")
    p.add_argument("--batch-size", type=int, default=1000, help="default: 1000")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda (default: cpu)")
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="also write report.html, report.md and plots/ (default: on)")
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
    from cnnlab.errors import ConfigError
    from cnnlab.evaluate import classification_report, measure_inference
    from cnnlab.evaluate.report import build_report, compare_engines
    from cnnlab.training.data import load_split

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1; got {args.batch_size}")
    device = resolve_device(args.device)
    engine = "auto" if args.engine == "all" else args.engine
    engines = ("torch", "onnx", "int8") if args.engine == "all" else ()
    model = load(args.checkpoint, device=device, engine=engine)
    # the same loading, preprocessing and checks as the report
    ds, src = load_split(model, args.split, dataset=args.dataset, data_dir=args.data_dir,
                         progress=not args.quiet)
    spec = model.input_spec
    compared = None
    if args.report:
        # the report evaluates the same split: take its figures instead of a second pass
        ev = build_report(model.path or args.checkpoint, dataset=ds, source=src,
                          split=args.split, device=device, engine=engine, engines=engines,
                          out_dir=args.out, batch_size=args.batch_size,
                          progress=not args.quiet)
        report = {k: ev[k] for k in ("accuracy", "macro", "weighted", "per_class",
                                     "confusion_matrix", "samples")}
        report["loss"] = ev["log_loss"]
        timing = {k: ev["efficiency"][k] for k in (
            "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "throughput_images_per_s",
            "throughput_batch_size")}
        compared = ev.get("engines")
        elapsed = None
    else:
        t0 = time.perf_counter()
        logits = model.logits(ds.images, batch_size=args.batch_size)
        elapsed = time.perf_counter() - t0
        report = classification_report(ds.targets, logits.argmax(1), model.classes)
        report["loss"] = F.cross_entropy(logits, ds.targets).item()
        timing = measure_inference(model.classifier, spec.shape, device=device,
                                   latency_runs=100, batch_size=min(1000, max(1, len(ds))),
                                   throughput_runs=3)
        timing["dataset_pass_s"] = round(elapsed, 3)
        if engines:
            compared = compare_engines(model.path or args.checkpoint, ds, list(engines),
                                       device=device, batch_size=args.batch_size)
    result = {"checkpoint": model.path, "dataset": src.name, "split": src.split,
              "origin": src.origin, "data": src.detail, "engine": model.engine, **report,
              "timing": timing}
    if compared is not None:
        result["engines"] = compared
    if args.report:
        result["report"] = ev["files"]["html"]
    if args.json:
        print_json(result)
        return 0
    print(f"{model.path}: {src.detail}, {report['samples']:,} images, engine {model.engine}")
    print(f"accuracy {report['accuracy']:.2%}   macro F1 {report['macro']['f1']:.4f}   "
          f"loss {report['loss']:.4f}\n")
    rows = [[c, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['specificity']:.4f}",
             f"{v['f1']:.4f}", str(v["support"])] for c, v in report["per_class"].items()]
    print(table(rows, ["class", "precision", "recall", "specificity", "f1", "support"]))
    print("\nconfusion matrix (rows: true class, columns: predicted)")
    cm = report["confusion_matrix"]
    print(table([[c, *map(str, row)] for c, row in zip(model.classes, cm, strict=True)],
                ["", *model.classes]))
    if compared:
        print("\nengines (the same images)")
        print(table([[r["engine"], r["error"], "", ""] if "error" in r else
                     [r["engine"], f"{r['accuracy']:.2%}", f"{r['agreement_with_torch']:.2%}",
                      str(r["disagreements"])] for r in compared],
                    ["engine", "accuracy", "agreement with torch", "disagreements"]))
    print(f"\ninference: batch 1 p50 {timing['latency_ms_p50']:.3f} ms "
          f"(p95 {timing['latency_ms_p95']:.3f}), batch {timing['throughput_batch_size']} "
          f"{timing['throughput_images_per_s']:,.0f} img/s"
          + (f"; whole split {elapsed:.2f} s" if elapsed is not None else ""))
    if result.get("report"):
        print(f"report: {result['report']}")
    return 0
