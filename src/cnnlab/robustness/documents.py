"""The robustness results as figures (``plots/robustness_*.png``) and as the report's
Robustness section with its model-card rows (:mod:`cnnlab.evaluate.sections`)."""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.evaluate.sections import Section, write_section

__all__ = ["robustness_section", "write_documents"]

log = logging.getLogger("cnnlab")


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    from cnnlab._io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def _plot_corruptions(c: dict[str, Any], path: Path) -> Path:
    names = list(c["accuracy"])
    fig, axes = _figure(9, 3.6)
    ax = axes[0, 0]
    pos = np.arange(len(names))
    has_ref = "reference" in c
    width = 0.4 if has_ref else 0.8
    ax.bar(pos - (width / 2 if has_ref else 0), [100 * c["accuracy"][n] for n in names],
           width, label="this model")
    if has_ref:
        ax.bar(pos + width / 2, [100 * c["reference"]["accuracy"][n] for n in names], width,
               label=f"reference ({c['reference']['model']})", alpha=0.7)
    ax.axhline(100 * c["clean_accuracy"], color="k", lw=0.8, ls="--", label="clean")
    ax.set_xticks(pos, [n.replace("_", " ") for n in names], rotation=45, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"MNIST-C: mean corruption accuracy {100 * c['mean_accuracy']:.1f} %"
                 + (f", mCE {100 * c['mce']:.0f} %" if "mce" in c else ""))
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def _plot_shifts(s: dict[str, Any], path: Path) -> Path:
    fig, axes = _figure(7, 4.2)
    ax = axes[0, 0]
    for name, curve in s["curves"].items():
        ax.plot([0, *curve["severity"]], [100 * s["page_accuracy"],
                                          *(100 * a for a in curve["accuracy"])],
                marker="o", label=name.replace("_", " "))
    ax.set_xlabel("severity (0: the digit on paper, no shift)")
    ax.set_ylabel("accuracy (%)")
    ax.set_xticks([0, 1, 2, 3])
    ax.set_title("Real-world shifts, read through the checkpoint's preprocessing")
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    return _save(fig, path)


def _plot_adversarial(a: dict[str, Any], path: Path) -> Path:
    curves = a["curves"]
    l2 = {k: v for k, v in curves.items() if v["norm"] == "l2"}
    fig, axes = _figure(9 if l2 else 5.5, 3.6, 1, 2 if l2 else 1)
    ax = axes[0, 0]
    for name, c in curves.items():
        if c["norm"] == "linf":
            ax.plot(c["eps"], [100 * v for v in c["accuracy"]], marker="o",
                    label=f"{name} ({c['images']} images)")
    if "autoattack" in a:
        aa = a["autoattack"]
        ax.scatter([aa["eps"]], [100 * aa["accuracy"]], marker="*", s=120, color="k", zorder=5,
                   label=f"AutoAttack ({aa['images']} images)")
    ax.set_xlabel("L-inf epsilon (pixels on [0, 1])")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("L-inf attacks")
    if l2:
        ax2 = axes[0, 1]
        for name, c in l2.items():
            ax2.plot(c["eps"], [100 * v for v in c["accuracy"]], marker="o", label=name)
        ax2.set_xlabel("L2 epsilon")
        ax2.set_ylim(0, 100)
        ax2.legend(fontsize=8)
        ax2.set_title("L2 attacks")
    return _save(fig, path)


def _plot_examples(examples: dict[str, Any], path: Path) -> Path:
    rows = [k for k in examples if k != "targets"]
    k = len(examples["targets"])
    fig, axes = _figure(1.1 * k + 0.5, 1.25 * len(rows), len(rows), k)
    for r, key in enumerate(rows):
        images, preds = examples[key]["images"], examples[key]["predicted"]
        for i in range(k):
            ax = axes[r, i]
            ax.imshow(images[i].mean(axis=0), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            right = preds[i] == examples["targets"][i]
            ax.set_title(f"{preds[i]}", fontsize=9, color="#1e7b34" if right else "#c0392b")
            if i == 0:
                ax.set_ylabel("clean" if key == "clean" else f"PGD {key}", fontsize=8)
    return _save(fig, path)


def _plot_ood(o: dict[str, Any], path: Path) -> Path:
    fig, axes = _figure(6, 3.4)
    ax = axes[0, 0]
    names = list(o["flagged"])
    pos = np.arange(len(names) + 1)
    ax.bar(pos, [100 * o["digits_flagged"], *(100 * o["flagged"][n] for n in names)],
           color=["#1e7b34", *["#c0392b"] * len(names)])
    ax.set_xticks(pos, ["MNIST digits", *(n.replace("_", " ") for n in names)], rotation=30,
                  ha="right")
    ax.set_ylabel("flagged ood (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"ood flag (confidence < {o['threshold']:.3f}); AUROC all "
                 f"{o['auroc']['confidence'].get('all', float('nan')):.3f}")
    return _save(fig, path)


def _pct(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{100 * v:.1f} %"


def robustness_section(result: dict[str, Any], figures: dict[str, str]) -> Section:
    """The report section and model-card rows for a result of
    :func:`cnnlab.robustness.run_robustness`."""
    lines: list[str] = [f"On the first {result['images']:,} MNIST test digits (clean accuracy "
                        f"{_pct(result['clean_accuracy'])}); `robustness.json` has every "
                        "figure."]
    card: list[tuple[str, str]] = []
    if "corruptions" in result:
        c = result["corruptions"]
        worst = min(c["accuracy"], key=c["accuracy"].get)
        text = (f"**Corruptions (MNIST-C, 15).** Mean corruption accuracy "
                f"{_pct(c['mean_accuracy'])}; worst: {worst.replace('_', ' ')} "
                f"{_pct(c['accuracy'][worst])}.")
        if "mce" in c:
            text += (f" mCE {100 * c['mce']:.0f} % relative to the reference model "
                     f"`{c['reference']['model']}` (its mean "
                     f"{_pct(c['reference']['mean_accuracy'])}).")
        lines.append(text)
        card.append(("Mean corruption accuracy (MNIST-C)", _pct(c["mean_accuracy"])))
        if "mce" in c:
            card.append((f"mCE (reference: {c['reference']['model']})",
                         f"{100 * c['mce']:.0f} %"))
    if "shifts" in result:
        s = result["shifts"]
        worst = min(s["middle_severity"], key=s["middle_severity"].get)
        which = "spread over the test digits" if s.get("spread") else "the first test digits"
        lines.append(f"**Real-world shifts** ({s['images']} digits, {which}, as pages read "
                     f"through the checkpoint's preprocessing). On paper without a shift "
                     f"{_pct(s['page_accuracy'])}; at the middle severity the lowest is "
                     f"{worst.replace('_', ' ')} {_pct(s['middle_severity'][worst])}.")
        card.append(("Lowest accuracy at a shift's middle severity",
                     f"{_pct(s['min_middle_severity'])} ({worst.replace('_', ' ')})"))
    if "adversarial" in result:
        a = result["adversarial"]
        parts = []
        for name, curve in a["curves"].items():
            parts.append(f"{name} " + ", ".join(
                f"{e:g}: {_pct(v)}" for e, v in zip(curve["eps"], curve["accuracy"],
                                                    strict=True)))
        text = "**Adversarial (ART, [0, 1] pixels).** " + "; ".join(parts) + "."
        if "autoattack" in a:
            aa = a["autoattack"]
            text += (f" AutoAttack at L-inf {aa['eps']:g}: {_pct(aa['accuracy'])} "
                     f"({aa['note']}).")
            card.append((f"AutoAttack robust accuracy (L-inf {aa['eps']:g})",
                         f"{_pct(aa['accuracy'])} on {aa['images']} images"))
        checks = a["checks"]
        text += " Gradient-masking checks: " + ", ".join(
            f"{k.replace('_', ' ')} {'pass' if v['pass'] else 'FAIL'}"
            for k, v in checks.items() if isinstance(v, dict)) + "."
        lines.append(text)
        card.append(("Gradient-masking checks", "pass" if checks["pass"] else "FAIL"))
    if "ood" in result:
        o = result["ood"]
        au = o["auroc"]
        lines.append(
            f"**Out of distribution.** AUROC of digits against non-digits by confidence "
            f"{au['confidence'].get('all', float('nan')):.3f}, by energy "
            f"{au['energy'].get('all', float('nan')):.3f} (" + ", ".join(
                f"{k.replace('_', ' ')} {v:.3f}" for k, v in au["confidence"].items()
                if k != "all") + f"). The ood flag (confidence < {o['threshold']:.4f}, chosen "
            f"so {100 * o['rate']:g} % of validation digits fall below) marks "
            f"{_pct(o['digits_flagged'])} of the test digits.")
        card.append(("OOD AUROC (non-digits, confidence)",
                     f"{au['confidence'].get('all', float('nan')):.3f}"))
    markdown = "\n\n".join(lines) + "\n"
    body = "".join(f"<p>{_bold(html.escape(line))}</p>" for line in lines)
    return Section(key="robustness", title="Robustness", markdown=markdown, html=body,
                   card=card, figures=figures)


def _bold(text: str) -> str:
    """``**x**`` of the Markdown lines as ``<b>x</b>``, ``x`` in backticks as code."""
    import re

    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def write_documents(out: Path, result: dict[str, Any], examples: dict[str, Any] | None, *,
                    report: bool = True) -> dict[str, str]:
    """Plots under ``out/plots/`` and the report section; returns the paths written."""
    figures: dict[str, str] = {}
    plots = {"corruptions": _plot_corruptions, "shifts": _plot_shifts,
             "adversarial": _plot_adversarial, "ood": _plot_ood}
    for key, plot in plots.items():
        if key in result:
            rel = f"plots/robustness_{key}.png"
            plot(result[key], out / rel)
            figures[key] = rel
    if examples is not None and len(examples) > 2:
        rel = "plots/robustness_examples.png"
        _plot_examples(examples, out / rel)
        figures["adversarial examples"] = rel
    files = {name: str(out / rel) for name, rel in figures.items()}
    if report:
        try:
            html_path = write_section(out, robustness_section(result, figures))
        except (KeyError, TypeError, ValueError) as e:  # an evaluation of an older format
            log.warning("robustness: the section is stored in %s/sections/ but the report "
                        "could not be written again (%s: %s); run `cnnlab report` on the "
                        "run to rebuild it", out, type(e).__name__, e)
            html_path = None
        if html_path is not None:
            files["report"] = str(html_path)
    return files
