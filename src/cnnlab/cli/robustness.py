"""``cnnlab robustness RUN``: corruptions (MNIST-C), real-world shifts, adversarial attacks and
out-of-distribution inputs, written as robustness.json, plots and the report's section."""

from __future__ import annotations

import argparse

from cnnlab.cli._util import Formatter, Parser, SubParsers


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    p = sub.add_parser(
        "robustness", parents=[common], formatter_class=formatter,
        help="how a digit model breaks: corruptions, shifts, attacks, non-digits",
        description="Measure a digit model on the first N MNIST test digits under the 15 "
                    "MNIST-C corruptions (made once and cached with checksums), real-world "
                    "shifts of scans and photos at three severities (each a page read through "
                    "the checkpoint's preprocessing, as `cnnlab predict` reads files), "
                    "adversarial attacks from ART (FGSM, PGD L-inf and L2 with restarts, "
                    "Square, AutoAttack; robust accuracy against epsilon, gradient-masking "
                    "checks) and inputs that are not digits (AUROC of the confidence; the "
                    "ood flag's threshold from the validation split, written to ood.json "
                    "beside the checkpoint, where predict and serve find it).\n\nWrites "
                    "robustness.json, plots/robustness_*.png and the Robustness section of "
                    "report.html / report.md into the run directory (runs/default for the "
                    "packaged model) or --out.",
        epilog="Examples:\n  cnnlab robustness runs/fast\n"
               "  cnnlab robustness default --suite corruptions,ood --images 500 --json")
    p.add_argument("checkpoint", metavar="RUN",
                   help="run directory, checkpoint, or `default` (the packaged MNIST model)")
    p.add_argument("--suite", default="corruptions,shifts,adversarial,ood",
                   help="comma-separated suites (default: corruptions,shifts,adversarial,ood)")
    p.add_argument("--images", type=int, default=1000,
                   help="the first N MNIST test digits (default: 1000)")
    p.add_argument("--corruptions", default="all",
                   help="comma-separated MNIST-C corruptions, or all (default: all 15)")
    p.add_argument("--shifts", default="all",
                   help="comma-separated shifts, or all (default: all)")
    p.add_argument("--attacks", default="all",
                   help="comma-separated attacks of fgsm, pgd-linf, pgd-l2, square, "
                        "autoattack, or all (default: all)")
    p.add_argument("--eps", default="0,0.05,0.1,0.2,0.3",
                   help="L-inf epsilons, pixels on [0, 1] (default: 0,0.05,0.1,0.2,0.3)")
    p.add_argument("--eps-l2", default="0,0.5,1,2,3",
                   help="L2 epsilons for pgd-l2 (default: 0,0.5,1,2,3)")
    p.add_argument("--pgd-steps", type=int, default=10, help="PGD steps (default: 10)")
    p.add_argument("--pgd-restarts", type=int, default=2,
                   help="PGD random starts; the worst case counts (default: 2)")
    p.add_argument("--black-box-images", type=int, default=200,
                   help="images Square runs on, the first of the N (default: 200)")
    p.add_argument("--autoattack-images", type=int, default=100,
                   help="images AutoAttack runs on, the first of the N; it costs the most "
                        "(default: 100)")
    p.add_argument("--autoattack-eps", type=float, default=0.3,
                   help="AutoAttack's L-inf epsilon (default: 0.3)")
    p.add_argument("--autoattack-version", default="fast",
                   help="fast (APGD-CE and APGD-DLR, 50 steps; Square at 300 queries) or "
                        "standard (Croce & Hein's without FAB-T: APGD-CE 100 steps, APGD-T "
                        "towards each other class, Square 5,000 queries; many times slower) "
                        "(default: fast)")
    p.add_argument("--shift-images", type=int, default=200,
                   help="digits the shifts draw as pages, the first of the N; 34 pages each "
                        "(default: 200)")
    p.add_argument("--shift-spread", action="store_true",
                   help="take the shifts' digits evenly spaced over the N instead of the "
                        "first of them (MNIST test's first 5,000 digits are all high-school "
                        "students', the harder half)")
    p.add_argument("--ood-images", type=int, default=200,
                   help="pages per non-digit set (default: 200)")
    p.add_argument("--ood-rate", type=float, default=0.01,
                   help="share of validation digits the ood flag marks (default: 0.01)")
    p.add_argument("--reference", default="default",
                   help="the model mCE is relative to: a run, a checkpoint, `default` (the "
                        "packaged model) or none (default: default)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the MNIST files are (default: the usual lookup: data/mnist, "
                        "~/.cache/cnnlab/mnist)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="where MNIST-C is cached (default: ~/.cache/cnnlab, under mnist-c/)")
    p.add_argument("--seed", type=int, default=0, help="default: 0")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where to write (default: the run directory; runs/default for the "
                        "packaged model)")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda (default: cpu)")
    p.add_argument("--json", action="store_true", help="print robustness.json's figures")
    p.set_defaults(run=run)


def _choice(text: str, known: tuple[str, ...]) -> list[str]:
    return list(known) if text.strip() == "all" else _names(text)


def _floats(text: str, flag: str) -> list[float]:
    from cnnlab.errors import ConfigError

    try:
        return [float(t) for t in _names(text)]
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated numbers, e.g. 0,0.1,0.3; got "
                          f"{text!r}") from None


def settings_from_args(args: argparse.Namespace) -> object:
    """The :class:`~cnnlab.robustness.RobustnessSettings` the flags ask for, validated.

    Raises:
        ConfigError: an unknown suite, corruption, shift or attack ("did you mean"), an
            epsilon outside [0, 1] (L-inf), or a count below 1.
    """
    from cnnlab.robustness import ATTACKS, CORRUPTIONS, SHIFTS, RobustnessSettings

    return RobustnessSettings(
        suites=_names(args.suite), images=args.images, seed=args.seed,
        corruptions=_choice(args.corruptions, CORRUPTIONS),
        shifts=_choice(args.shifts, SHIFTS), attacks=_choice(args.attacks, ATTACKS),
        eps=_floats(args.eps, "--eps"), eps_l2=_floats(args.eps_l2, "--eps-l2"),
        pgd_steps=args.pgd_steps, pgd_restarts=args.pgd_restarts,
        black_box_images=args.black_box_images, autoattack_images=args.autoattack_images,
        autoattack_eps=args.autoattack_eps, autoattack_version=args.autoattack_version,
        shift_images=args.shift_images, shift_spread=args.shift_spread,
        ood_images=args.ood_images,
        ood_rate=args.ood_rate, reference=args.reference, data_dir=args.data_dir,
        cache_dir=args.cache_dir).check()


def run(args: argparse.Namespace) -> int:
    from cnnlab.api import load
    from cnnlab.cli._util import print_json, table
    from cnnlab.device import resolve_device
    from cnnlab.robustness import run_robustness

    settings = settings_from_args(args)  # before loading: a typo costs nothing
    model = load(args.checkpoint, device=resolve_device(args.device), engine="torch")
    result = run_robustness(model, settings, out_dir=args.out,  # type: ignore[arg-type]
                            progress=not args.quiet)
    if args.json:
        print_json({k: v for k, v in result.items() if k != "settings"})
        return 0
    print(f"{model.path}: {result['images']:,} MNIST test digits, clean accuracy "
          f"{result['clean_accuracy']:.2%}")
    if "corruptions" in result:
        c = result["corruptions"]
        rows = [[name, f"{acc:.2%}"] + ([f"{c['reference']['accuracy'][name]:.2%}",
                                          f"{100 * c['corruption_error'][name]:.0f} %"]
                                         if "mce" in c else [])
                for name, acc in c["accuracy"].items()]
        header = ["corruption", "accuracy"] + (
            [f"reference ({c['reference']['model']})", "CE"] if "mce" in c else [])
        print("\n" + table(rows, header))
        print(f"mean corruption accuracy {c['mean_accuracy']:.2%}"
              + (f"   mCE {100 * c['mce']:.0f} % (reference: {c['reference']['model']})"
                 if "mce" in c else ""))
    if "shifts" in result:
        s = result["shifts"]
        rows = [[name, *(f"{a:.2%}" for a in curve["accuracy"])]
                for name, curve in s["curves"].items()]
        which = "spread over the images" if s.get("spread") else "the first of the images"
        print(f"\nshifts, {s['images']} digits, {which} (on paper, no shift: "
              f"{s['page_accuracy']:.2%})")
        print(table(rows, ["shift", "severity 1", "severity 2", "severity 3"]))
    if "adversarial" in result:
        a = result["adversarial"]
        print("\nadversarial (robust accuracy)")
        for name, curve in a["curves"].items():
            points = "  ".join(f"{e:g}: {v:.1%}" for e, v in zip(curve["eps"],
                                                                  curve["accuracy"],
                                                                  strict=True))
            print(f"  {name:9s} ({curve['norm']}, {curve['images']} images)  {points}")
        if "autoattack" in a:
            aa = a["autoattack"]
            print(f"  AutoAttack L-inf {aa['eps']:g}: {aa['accuracy']:.1%} ({aa['note']})")
            for stage in aa.get("stages", []):  # the standard version: after each attack
                print(f"    after {stage['attack']}: {stage['accuracy']:.1%} "
                      f"({stage['seconds']:.0f} s)")
        checks = a["checks"]
        print("  gradient-masking checks: " + ", ".join(
            f"{k.replace('_', ' ')} {'pass' if v['pass'] else 'FAIL'}"
            for k, v in checks.items() if isinstance(v, dict)))
    if "ood" in result:
        o = result["ood"]
        print("\nout of distribution: AUROC (confidence) "
              + ", ".join(f"{k} {v:.3f}" for k, v in o["auroc"]["confidence"].items())
              + f"\n  energy: all {o['auroc']['energy'].get('all', float('nan')):.3f};   "
              f"ood flag: confidence < {o['threshold']:.4f} (marks {o['rate']:.0%} of "
              f"validation digits, {o['digits_flagged']:.1%} of test digits)")
    print(f"\n{result['seconds']['total']:.0f} s; wrote {result['files']['json']}"
          + (f" and {result['files']['report']}" if "report" in result["files"] else ""))
    return 0
