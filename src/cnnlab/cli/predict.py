"""``cnnlab predict CHECKPOINT IMAGE_OR_DIR...``: label and top-3 for each image file."""

from __future__ import annotations

import argparse
import sys

from cnnlab.cli._util import Formatter, Parser, SubParsers

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    p = sub.add_parser(
        "predict", parents=[common], formatter_class=formatter,
        help="classify image files",
        description="Classify image files of any size. Digit models first bring each image to "
                    "MNIST's form: grayscale, dark-on-light or light-on-dark detected, cropped "
                    "to the ink, fitted to 20x20 and centred by mass in 28x28. Directories are "
                    "searched recursively. A bad file is reported by name, the others are still "
                    "predicted, and the exit status is then 2.",
        epilog="Example: cnnlab predict runs/fast digits/ --json")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="run directory, checkpoint, or `default` (the packaged MNIST model)")
    p.add_argument("inputs", metavar="IMAGE_OR_DIR", nargs="+")
    p.add_argument("--top-k", type=int, default=3, help="classes to show per image (default: 3)")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda (default: cpu)")
    p.add_argument("--engine", choices=["auto", "torch", "onnx", "int8"], default="auto",
                   help="what runs the model: torch, onnx (ONNX Runtime FP32), int8 (ONNX "
                        "Runtime on an INT8 quantisation, used only within 0.1 point of FP32 "
                        "accuracy; made on first use from the training data unless a "
                        "model.int8.onnx sits beside the checkpoint); auto picks the fastest "
                        "available at batch 1, measured on first use and remembered in "
                        "~/.cache/cnnlab/engines (default: auto)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per line: path, label, probabilities (all classes), "
                        "confidence (the top probability), energy (-logsumexp of the logits) "
                        "and ood (confidence below the threshold `cnnlab robustness` chose on "
                        "validation data; null when the model has none); "
                        "a file that cannot be classified (unreadable, or a blank page with no "
                        "ink) gets a line with path and error instead")
    p.set_defaults(run=run)


def _expand(inputs: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    from pathlib import Path

    files, bad = [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*")
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                bad.append((item, "directory contains no image files"))
            files += found
        elif p.is_file():
            files.append(str(p))
        else:
            bad.append((item, "no such file or directory"))
    return files, bad


def run(args: argparse.Namespace) -> int:
    import json

    from cnnlab.api import load
    from cnnlab.device import resolve_device
    from cnnlab.errors import CnnlabError, ConfigError

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1 (classes to show per image); got {args.top_k}")
    model = load(args.checkpoint, device=resolve_device(args.device), engine=args.engine)
    files, bad = _expand(args.inputs)
    for path, reason in bad:
        _report_error(path, reason, args.json)
    inputs, names = [], []
    for path in files:
        try:
            inputs.append(model.to_input(path))
            names.append(path)
        except CnnlabError as e:
            bad.append((path, str(e)))
            _report_error(path, str(e), args.json)
    if inputs:
        import torch

        for path, pred in zip(names, model.predict(torch.stack(inputs)), strict=True):
            if args.json:
                print(json.dumps({"path": path, "label": pred.label,
                                  "probabilities": pred.probabilities,
                                  "confidence": pred.confidence, "energy": pred.energy,
                                  "ood": pred.ood}))
            else:
                top = ", ".join(f"{c} {p:.1%}" for c, p in pred.top(args.top_k))
                print(f"{path}: {pred.label}   (top {args.top_k}: {top})")
    return 2 if bad else 0


def _report_error(path: str, reason: str, as_json: bool) -> None:
    """A file that gets no label: one `error:` line on stderr, and with --json also a line
    on stdout naming it, so a consumer of the JSON sees every input."""
    import json

    message = reason if path in reason else f"{path}: {reason}"
    print(f"error: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"path": path, "error": reason}))
