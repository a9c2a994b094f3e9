"""The explanation score card (method x metric) and the report's "Explanations" section.

:func:`score_card` runs every method the model can run on the first ``images`` images of a
split: deletion and insertion AUC against a random ordering, and the model-randomisation check
on the first ``sanity_images`` of them. :func:`write_section` adds the card to the run's report
through :mod:`cnnlab.evaluate.sections`, with Grad-CAM panels of the most confident mistakes
and of one correct example per class, the t-SNE map of penultimate features, the first-layer
filters and the mean curves.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import ConfigError
from cnnlab.explain.attributions import Explainer, check_method, heatmap
from cnnlab.explain.faithfulness import (
    SSIM_PASS,
    deletion_insertion,
    random_heatmaps,
    randomisation_check,
)

__all__ = ["score_card", "write_section"]

# the section's figures in reading order
_FIGURE_ORDER = ("explain_mistakes", "explain_correct", "explain_curves", "explain_tsne",
                 "explain_filters")


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"The {name!r} parameter of the explanation score card must be an "
                          f"int >= 1. Got {value!r} instead.")
    return value


def score_card(model: Any, *, images: int = 1000, sanity_images: int = 100,
               methods: list[str] | None = None, split: str = "test",
               dataset: str | None = None, steps: int = 10, seed: int = 0,
               progress: bool = False) -> dict[str, Any]:
    """Faithfulness of each method on the first ``images`` images of ``split``, explaining the
    predicted class.

    Returns:
        ``rows`` (one per method: deletion / insertion AUC, their ratio to the random
        ordering's, SSIM and Spearman of the randomisation check, whether it passes, seconds),
        ``random`` (the random ordering's AUCs), ``recommended`` (methods that pass the check
        and beat the random ordering at deletion), ``fails``, ``best`` (the lowest deletion
        ratio among the recommended; ``best_any``: among all), ``curves`` and ``seconds``.

    Raises:
        ConfigError: a non-positive count, or an unknown method.
        DataError, DatasetNotFoundError: the split cannot be loaded.
    """
    from cnnlab.progress import Progress
    from cnnlab.training.data import load_split

    _positive("images", images)
    _positive("sanity_images", sanity_images)
    _positive("steps", steps)
    t0 = time.perf_counter()
    explainer = Explainer.for_model(model)
    chosen = methods or explainer.methods
    for m in chosen:
        check_method(m, explainer.cam_layer, explainer.model_name)
    ds, src = load_split(model, split, dataset=dataset, progress=progress)
    x = ds.images[:images]
    targets = explainer.predict(x).argmax(1)
    n, s = len(x), min(sanity_images, len(x))
    rand = deletion_insertion(explainer, x, targets, random_heatmaps((n, *x.shape[2:]), seed),
                              steps=steps)
    random_row = {"deletion_auc": float(rand["deletion_auc"].mean()),
                  "insertion_auc": float(rand["insertion_auc"].mean())}
    curves = {"random": (rand["deletion"].mean(0), rand["insertion"].mean(0))}
    rows = []
    bar = Progress(len(chosen), "explain score card", "methods", enabled=progress)
    for m in chosen:
        start = time.perf_counter()
        maps = heatmap(explainer.attribute(x, targets, m))
        curve = deletion_insertion(explainer, x, targets, maps, steps=steps)
        sanity = randomisation_check(explainer, x[:s], targets[:s], m, seed=seed,
                                     trained_maps=maps[:s])
        d, i = float(curve["deletion_auc"].mean()), float(curve["insertion_auc"].mean())
        rows.append({"method": m, "deletion_auc": d, "insertion_auc": i,
                     "deletion_vs_random": d / random_row["deletion_auc"],
                     "insertion_vs_random": i / random_row["insertion_auc"],
                     "ssim": sanity["ssim"], "spearman": sanity["spearman"],
                     "passes_randomisation": sanity["passes"],
                     "seconds": round(time.perf_counter() - start, 2)})
        curves[m] = (curve["deletion"].mean(0), curve["insertion"].mean(0))
        bar.update(1, postfix=m)
    bar.close()
    recommended = [r["method"] for r in rows
                   if r["passes_randomisation"] and r["deletion_vs_random"] < 1]
    by_ratio = sorted(rows, key=lambda r: r["deletion_vs_random"])
    best = next((r["method"] for r in by_ratio if r["method"] in recommended), None)
    return {"images": n, "sanity_images": s, "split": src.detail, "steps": steps,
            "ssim_pass": SSIM_PASS, "random": random_row, "rows": rows,
            "recommended": recommended,
            "fails": [r["method"] for r in rows if not r["passes_randomisation"]],
            "best": best, "best_any": by_ratio[0]["method"] if by_ratio else None,
            "curves": {k: [a.tolist(), b.tolist()] for k, (a, b) in curves.items()},
            "seconds": round(time.perf_counter() - t0, 2)}


def _table(card: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["method", "deletion AUC", "vs random", "insertion AUC", "vs random",
            "randomisation SSIM", "Spearman", f"passes (SSIM < {card['ssim_pass']})", "s"]
    body = [[r["method"], f"{r['deletion_auc']:.3f}", f"{r['deletion_vs_random']:.2f}x",
             f"{r['insertion_auc']:.3f}", f"{r['insertion_vs_random']:.2f}x",
             f"{r['ssim']:.3f}", f"{r['spearman']:.3f}",
             "yes" if r["passes_randomisation"] else "no", f"{r['seconds']:.1f}"]
            for r in card["rows"]]
    rnd = card["random"]
    body.append(["random ordering", f"{rnd['deletion_auc']:.3f}", "1.00x",
                 f"{rnd['insertion_auc']:.3f}", "1.00x", "-", "-", "-", "-"])
    return head, body


def _panels(model: Any, explainer: Explainer, out: Path, *, dataset: str | None,
            split: str, tsne_images: int, progress: bool) -> dict[str, str]:
    """Grad-CAM panels (mistakes, one correct per class), t-SNE map and filters, as PNG files
    under ``out/plots``; returns name -> path relative to ``out``."""
    from cnnlab.explain import figures, inner
    from cnnlab.explain.images import WORST
    from cnnlab.training.data import load_split

    ds, _ = load_split(model, split, dataset=dataset, progress=progress)
    classes = list(model.classes)
    probs = explainer.predict(ds.images)
    preds, targets, conf = probs.argmax(1), ds.targets.numpy(), probs.max(1)
    method = "gradcam" if "gradcam" in explainer.methods else "saliency"
    plots = out / "plots"
    files: dict[str, str] = {}
    wrong = np.flatnonzero(preds != targets)
    wrong = wrong[np.argsort(-conf[wrong], kind="stable")][:WORST]
    correct = [int(np.flatnonzero((preds == targets) & (targets == k))[0])
               for k in range(len(classes)) if ((preds == targets) & (targets == k)).any()]
    for key, idx, title, colour in (
            ("explain_mistakes", wrong, f"{method}: most confident mistakes", "#c0392b"),
            ("explain_correct", np.array(correct, dtype=np.int64),
             f"{method}: one correct example per class", "#1e7b34")):
        heats = (heatmap(explainer.attribute(ds.images[idx], preds[idx], method)) if len(idx)
                 else np.zeros((0, *ds.images.shape[2:])))
        titles = [f"true {classes[targets[i]]} / pred {classes[preds[i]]} {conf[i]:.2f}"
                  for i in idx]
        path = figures.plot_panels(ds.images[idx].numpy(), heats, titles, [colour] * len(idx),
                                   title, plots / f"{key}.png")
        files[key] = str(path.relative_to(out))
    sel = np.arange(min(tsne_images, len(ds)))
    if len(sel) >= 5:
        coords = inner.tsne_map(inner.penultimate_features(explainer, ds.images[sel]))
        files["explain_tsne"] = str(figures.plot_tsne(
            coords, targets[sel], preds[sel], classes, plots / "explain_tsne.png"
        ).relative_to(out))
    files["explain_filters"] = str(figures.plot_filters(
        inner.first_layer_filters(explainer.classifier), plots / "explain_filters.png"
    ).relative_to(out))
    return files


def write_section(model: Any, report_dir: str | Path, card: dict[str, Any], *,
                  dataset: str | None = None, split: str = "test", tsne_images: int = 2000,
                  progress: bool = False) -> dict[str, Any]:
    """Write the "Explanations" section (the score card and the figures) into the report in
    ``report_dir`` (:func:`cnnlab.evaluate.sections.write_section`).

    Returns:
        ``section`` (the stored JSON's path), ``report`` (report.html when it was re-rendered,
        else None) and ``figures`` (name -> path relative to ``report_dir``).
    """
    from cnnlab.evaluate.sections import SECTIONS_DIR, Section
    from cnnlab.evaluate.sections import write_section as store
    from cnnlab.explain import figures

    out = Path(report_dir)
    explainer = Explainer.for_model(model)
    files = _panels(model, explainer, out, dataset=dataset, split=split,
                    tsne_images=tsne_images, progress=progress)
    curves = {k: (np.asarray(a), np.asarray(b)) for k, (a, b) in card["curves"].items()}
    files["explain_curves"] = str(figures.plot_curves(
        curves, out / "plots" / "explain_curves.png").relative_to(out))
    head, body = _table(card)
    best = next((r for r in card["rows"] if r["method"] == card["best"]), None)
    summary = (f"On the first {card['images']} images of {card['split']}, explaining the "
               f"predicted class; pixels removed or inserted in {card['steps']} steps; the "
               f"randomisation check (Adebayo et al. 2018) on the first {card['sanity_images']}. "
               f"Recommended (pass the check, beat a random ordering): "
               f"{', '.join(card['recommended']) or 'none'}; failing the check: "
               f"{', '.join(card['fails']) or 'none'}.")
    if best is not None:
        summary += (f" Best recommended method: {best['method']}, deletion AUC "
                    f"{best['deletion_vs_random']:.2f}x the random ordering's.")
    md = [summary, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(row) + " |" for row in body]
    esc = html.escape
    table = ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"
             + "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                       for row in body) + "</table>")
    card_rows = [("Recommended explanation methods", ", ".join(card["recommended"]) or "none"),
                 ("Fail the randomisation check", ", ".join(card["fails"]) or "none")]
    if best is not None:
        card_rows.insert(0, ("Best explanation method",
                             f"{best['method']}: deletion AUC {best['deletion_vs_random']:.2f}x "
                             "random"))
    section = Section(key="explanations", title="Explanations", markdown="\n".join(md) + "\n",
                      html=f"<p>{esc(summary)}</p>{table}", card=card_rows,
                      figures={k: files[k] for k in _FIGURE_ORDER if k in files})
    report = store(out, section)
    return {"section": str(out / SECTIONS_DIR / "explanations.json"),
            "report": None if report is None else str(report), "figures": files}
