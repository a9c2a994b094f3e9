"""``cnnlab explain RUN [IMAGE|FOLDER ...]``: what a prediction rests on, and ``--evaluate``:
how faithful each explanation method is (a score card in the run's report)."""

from __future__ import annotations

import argparse
import sys

from cnnlab.cli._util import Formatter, Parser, SubParsers

METHOD_NAMES = ("gradcam", "ig", "saliency", "occlusion", "guided-gradcam")  # explain.METHODS


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    p = sub.add_parser(
        "explain", parents=[common], formatter_class=formatter,
        help="explain predictions (Grad-CAM, integrated gradients, ...) and score the methods",
        description="Attributions on Captum for images, as the model saw them (its own "
                    "preprocessing): a PNG per image with the input, the attribution over it "
                    "and the nearest training images in feature space, titled with the "
                    "predicted, true (when the image lies in a folder named after its class) "
                    "and explained class; an .npy file per image with the per-pixel array; "
                    "the first-layer filters and the first image's feature maps of every stage. "
                    "Without images: the test images the report lists as worst (its most "
                    "confident mistakes). --evaluate scores every method instead: deletion and "
                    "insertion AUC against a random ordering, and the model-randomisation "
                    "check (Adebayo et al. 2018), written into the run's report with Grad-CAM "
                    "panels and a t-SNE map of penultimate features.",
        epilog="Examples: cnnlab explain runs/fast digit.png --method ig; "
               "cnnlab explain runs/fast --evaluate")
    p.add_argument("checkpoint", metavar="RUN",
                   help="run directory, checkpoint, or `default` (the packaged MNIST model)")
    p.add_argument("inputs", metavar="IMAGE_OR_DIR", nargs="*",
                   help="image files or folders (default: the report's worst test images)")
    p.add_argument("--method", default="gradcam",
                   help=f"{' | '.join(METHOD_NAMES)} (default: gradcam)")
    p.add_argument("--target", default=None, metavar="CLASS",
                   help="the class to explain, by name or index (default: the predicted one)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where to write the figures and arrays (default: RUN/explain; "
                        "runs/default/explain for the packaged model)")
    p.add_argument("--neighbours", type=int, default=5,
                   help="nearest training images to show per image, 0 for none (default: 5)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: each image's classes and the files written "
                        "(the per-pixel arrays are .npy files named there)")
    p.add_argument("--evaluate", action="store_true",
                   help="score every method the model can run and add the score card to the "
                        "run's report (report.html, report.md; --out: that report's folder)")
    p.add_argument("--images", type=int, default=1000,
                   help="with --evaluate: test images scored (default: 1000)")
    p.add_argument("--sanity-images", type=int, default=100,
                   help="with --evaluate: images of the randomisation check (default: 100)")
    p.add_argument("--tsne-images", type=int, default=2000,
                   help="with --evaluate: test images in the t-SNE map (default: 2000)")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda (default: cpu)")
    p.set_defaults(run=run)


def _check_count(flag: str, value: int, low: int) -> None:
    from cnnlab.errors import ConfigError

    if value < low:
        raise ConfigError(f"{flag} must be an int >= {low}; got {value}")


def _true_class(path: str, classes: list[str]) -> int | None:
    from pathlib import Path

    parent = Path(path).parent.name
    return classes.index(parent) if parent in classes else None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from cnnlab.api import load
    from cnnlab.cli._util import print_json
    from cnnlab.cli.predict import _expand
    from cnnlab.device import resolve_device
    from cnnlab.errors import CnnlabError, ConfigError
    from cnnlab.explain import Explainer, check_method, explain_images, worst_test_images
    from cnnlab.explain.images import parse_target
    from cnnlab.inference.checkpoint import checkpoint_path, default_model_path

    _check_count("--neighbours", args.neighbours, 0)
    _check_count("--images", args.images, 1)
    _check_count("--sanity-images", args.sanity_images, 1)
    _check_count("--tsne-images", args.tsne_images, 1)
    check_method(args.method)  # "did you mean" before anything is loaded
    model = load(args.checkpoint, device=resolve_device(args.device), engine="torch")
    ckpt = checkpoint_path(args.checkpoint)
    packaged = ckpt.resolve() == default_model_path().resolve()
    run_dir = Path("runs") / "default" if packaged else ckpt.parent
    explainer = Explainer.for_model(model)
    progress = not args.quiet
    if args.evaluate:
        if args.inputs:
            raise ConfigError("--evaluate scores the methods on the run's test split; "
                              "give no images with it")
        from cnnlab.explain import score_card, write_section

        card = score_card(model, images=args.images, sanity_images=args.sanity_images,
                          progress=progress)
        written = write_section(model, Path(args.out) if args.out else run_dir, card,
                                tsne_images=args.tsne_images, progress=progress)
        card.pop("curves")
        if args.json:
            print_json({**card, **written})
        else:
            from cnnlab.cli._util import table

            rows = [[r["method"], f"{r['deletion_vs_random']:.2f}x",
                     f"{r['insertion_vs_random']:.2f}x", f"{r['ssim']:.3f}",
                     "yes" if r["passes_randomisation"] else "no"] for r in card["rows"]]
            print(table(rows, ["method", "deletion vs random", "insertion vs random",
                               "randomisation SSIM", "passes"]))
            print(f"recommended: {', '.join(card['recommended']) or 'none'}; fail the "
                  f"randomisation check: {', '.join(card['fails']) or 'none'} "
                  f"({card['images']} images, {card['seconds']:.0f} s)")
            print(f"report: {written['report'] or written['section']}")
        return 0
    check_method(args.method, explainer.cam_layer, explainer.model_name)
    target = parse_target(args.target, list(model.classes))
    out = Path(args.out) if args.out else run_dir / "explain"
    bad: list[tuple[str, str]] = []
    if args.inputs:
        files, bad = _expand(args.inputs)
        inputs, names, true = [], [], []
        for path in files:
            try:
                inputs.append(model.to_input(path))
                names.append(path)
                true.append(_true_class(path, list(model.classes)))
            except CnnlabError as e:
                bad.append((path, str(e)))
        for path, reason in bad:
            print(f"error: {reason if path in reason else f'{path}: {reason}'}", file=sys.stderr)
        if not inputs:
            return 2
        images = torch.stack(inputs)
        true_list: list[int | None] = true
    else:
        images, t, names, _ = worst_test_images(model, progress=progress)
        true_list = [int(v) for v in t]
        if not names:
            print("the test split has no mistakes: nothing the report lists as worst; give "
                  "image files to explain", file=sys.stderr)
            return 0
    result = explain_images(model, images, names, out, method=args.method, target=target,
                            true=true_list, neighbours=args.neighbours, progress=progress)
    if args.json:
        print_json({**result, "errors": [{"path": p, "error": e} for p, e in bad]})
    else:
        for item in result["images"]:
            true_text = f", true {item['true']}" if item["true"] is not None else ""
            print(f"{item['image']}: predicted {item['predicted']} "
                  f"({item['probability']:.1%}){true_text}; {item['method']} explains "
                  f"{item['explained']} -> {item['overlay']}")
        for name, path in result["files"].items():
            print(f"{name}: {path}")
    return 2 if bad else 0
