"""The evaluation report's documents: the model card, ``report.md`` and the self-contained
``report.html`` (every figure embedded, readable offline), written from the ``evaluation``
section that :func:`cnnlab.evaluate.report.build_report` computes."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnlab.evaluate.sections import Section

__all__ = ["PLOT_TITLES", "REPORT_CSS", "html_page", "markdown", "model_card"]

PLOT_TITLES = {
    "confusion_matrix": "Confusion matrix",
    "roc_curves": "ROC curves",
    "training_curves": "Training curves",
    "reliability": "Reliability diagram",
    "per_class_f1": "F1 per class",
    "sample_grid": "Sample predictions",
    "confident_mistakes": "Most confident mistakes",
    "confused_pairs": "Most-confused class pairs",
}


# --- the model card ------------------------------------------------------------------------------

def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.{digits}f} %"


def _ci(pair: list[float], digits: int = 2) -> str:
    return f"[{_pct(pair[0], digits)}, {_pct(pair[1], digits)}]"


def _num(x: Any, fmt: str = ".4f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and x != x) else format(x, fmt)


def _seconds(t: float) -> str:
    return f"{t:,.1f} s" if t >= 10 else f"{t:.3g} s"


def model_card(model: Any, ev: dict[str, Any], training: dict[str, Any],
                history: list[dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    """The card as sections of (label, value) rows, shared by the Markdown and HTML writers."""
    cfg = model.config
    data_cfg, model_cfg = cfg.get("data", {}), cfg.get("model", {})
    optim, train = cfg.get("optim", {}), cfg.get("train", {})
    spec = model.input_spec
    kind = model.preprocessing.get("kind", "")
    trained_on = data_cfg.get("dataset", "unknown")
    data = [
        ("evaluated on", f"{ev['data']}, {ev['samples']:,} images, engine {ev['engine']}"),
        ("trained on", f"{trained_on}"
         + (f", {training['train_images']:,} training images" if training.get("train_images")
            else "")),
        ("classes", f"{len(ev['classes'])}: {', '.join(ev['classes'])}"),
        ("input", f"{spec.shape_str()}, normalised with mean {list(spec.mean)} "
                  f"and std {list(spec.std)}"),
        ("preprocessing", kind or "none recorded"),
    ]
    kwargs = model_cfg.get("kwargs") or {}
    recipe = [
        ("model", f"{model_cfg.get('name', type(model.classifier).__name__)}"
         + (f" {kwargs}" if kwargs else "")),
        ("recipe", cfg.get("recipe") or "none (defaults and overrides)"),
        ("optimizer", f"{optim.get('optimizer', '?')}, lr {optim.get('lr', '?')}, "
                      f"weight decay {optim.get('weight_decay', '?')}, scheduler "
                      f"{optim.get('scheduler', '?')}"),
        ("training", f"{training.get('epochs_run', len(history) or '?')} epochs "
                     f"(of {train.get('epochs', '?')}), batch {train.get('batch_size', '?')}, "
                     f"label smoothing {train.get('label_smoothing', '?')}, EMA "
                     f"{train.get('ema', '?')}, augmentation "
                     f"{'on' if (data_cfg.get('augment') or {}).get('enabled') else 'off'}, "
                     f"seed {train.get('seed', '?')}"),
    ]
    topk = next(key for key in ev if key.startswith("top") and key.endswith("_accuracy"))
    headline = [
        ("accuracy", f"{_pct(ev['accuracy'])} (95 % CI {_ci(ev['accuracy_ci'])})"),
        ("macro F1", f"{_num(ev['macro_f1'])} (95 % CI [{_num(ev['macro_f1_ci'][0])}, "
                     f"{_num(ev['macro_f1_ci'][1])}])"),
        ("balanced accuracy", _pct(ev["balanced_accuracy"])),
        (topk.replace("_", " ").replace("top", "top-"), _pct(ev[topk])),
        ("log-loss", _num(ev["log_loss"])),
        ("ROC AUC", f"macro {_num(ev['roc_auc_macro'], '.5f')}, "
                    f"micro {_num(ev['roc_auc_micro'], '.5f')}"),
        ("calibration", f"ECE {_num(ev['ece'])}"),
    ]
    if "writer_groups" in ev:
        wg = ev["writer_groups"]
        a, b = wg["groups"]
        headline.append(("writer groups", f"{a['name']} {_pct(a['accuracy'])}, {b['name']} "
                         f"{_pct(b['accuracy'])}; error gap ({a['name']} minus {b['name']}) "
                         f"{_pct(wg['gap'])} (95 % CI {_ci(wg['gap_ci'])}, resampling "
                         "writers)"))
    eff = ev["efficiency"]
    efficiency = [
        ("latency, batch 1", f"p50 {_num(eff['latency_ms_p50'], '.3f')} ms, p95 "
                             f"{_num(eff['latency_ms_p95'], '.3f')} ms, p99 "
                             f"{_num(eff['latency_ms_p99'], '.3f')} ms"),
        ("throughput", f"{eff['throughput_images_per_s']:,.0f} images/s at batch "
                       f"{eff['throughput_batch_size']}"),
        ("measured on", f"{eff['device']}, {eff['threads']} threads ({eff['cpu']})"),
        ("training time", "n/a" if eff["train_time_s"] is None
         else _seconds(float(eff["train_time_s"]))),
        ("parameters", f"{eff['parameters']:,}"),
        ("MACs per image", f"{eff['macs']:,}"),
        ("checkpoint size", "n/a" if eff["checkpoint_mb"] is None
         else f"{eff['checkpoint_mb']:.2f} MB"),
    ]
    limits = []
    if kind == "mnist-digits":
        limits.append(("inputs", "digits centred like MNIST (white on black, size-normalised "
                                 f"in {spec.height}x{spec.width}); other inputs need "
                                 "preprocessing (`cnnlab predict` does it for image files)"))
    else:
        limits.append(("inputs", f"images resized to {spec.height}x{spec.width} with "
                                 f"{spec.channels} channel(s); other framings are untested"))
    limits.append(("scope", f"measured on one split of {ev['dataset']}; data from another "
                            "source can score lower"))
    if ev.get("origin") == "external":
        limits.append(("data", "external data: not the data the model was trained on"))
    if ev["split"] == "train":
        limits.append(("split", "the training split: these figures overstate accuracy on new "
                                "data"))
    if ev["ece"] == ev["ece"] and ev["ece"] > 0.05:
        limits.append(("calibration", f"ECE {ev['ece']:.3f}: probabilities should not be read "
                                      "as frequencies without recalibration"))
    if "writer_groups" in ev and ev["writer_groups"]["gap_significant"]:
        limits.append(("writers", "accuracy differs between the two writer populations (the "
                                  "gap's 95 % interval excludes 0)"))
    for message in ev["warnings"]:
        limits.append(("warning", message))
    limits.append(("timing", "latency and throughput depend on the machine and its load; "
                             "compare them only across runs measured on the same machine"))
    return {"Data": data, "Recipe and model": recipe, "Headline metrics": headline,
            "Efficiency": efficiency, "Known limits": limits}


# --- writers -------------------------------------------------------------------------------------

def _per_class_rows(ev: dict[str, Any]) -> list[list[str]]:
    aucs = ev["roc_auc_per_class"]
    return [[c, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['specificity']:.4f}",
             f"{v['f1']:.4f}", _num(aucs.get(c)), str(v["support"])]
            for c, v in ev["per_class"].items()]


_PER_CLASS_HEADER = ["class", "precision", "recall", "specificity", "F1", "ROC AUC", "support"]
_ENGINE_HEADER = ["engine", "accuracy", "agreement with torch", "disagreements"]


def _engine_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [[r["engine"], r["error"], "", ""] if "error" in r else
            [r["engine"], _pct(r["accuracy"]), _pct(r["agreement_with_torch"]),
             str(r["disagreements"])] for r in rows]


_GROUP_HEADER = ["group", "writers", "images", "accuracy", "95 % CI", "errors"]
WRITER_GROUPS_NOTE = (
    "Groups from the QMNIST writer labels (cnnlab.evaluate.writers): MNIST test images 0-5000 "
    "were written by high-school students (NIST hsf4), 5001-9999 by Census Bureau employees "
    "(hsf0), the opposite of the MNIST web page's description. Intervals resample writers, "
    "not digits; the gap is the students' error rate minus the employees'.")


def _group_rows(wg: dict[str, Any]) -> list[list[str]]:
    rows = [[g["name"], g["writers"], g["images"], _pct(g["accuracy"]), _ci(g["accuracy_ci"]),
             str(g["errors"])] for g in wg["groups"]]
    rows.append(["gap", wg["gap_definition"], "", _pct(wg["gap"]), _ci(wg["gap_ci"]), ""])
    return rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])


def _title(ev: dict[str, Any]) -> str:
    return f"Evaluation report: {Path(ev['checkpoint']).parent.name or ev['checkpoint']}"


def _card(ev: dict[str, Any], sections: Sequence[Section]) -> dict[str, Any]:
    """The model card with a group of rows for every added section that has some."""
    card = dict(ev["model_card"])
    for s in sections:
        if s.card:
            card[s.title] = s.card
    return card


def markdown(ev: dict[str, Any], sections: Sequence[Section] = ()) -> str:
    """The report as Markdown, its figures linked from plots/; ``sections`` (see
    :mod:`cnnlab.evaluate.sections`) go after the built-in ones."""
    parts = [f"# {_title(ev)}", "",
             f"Checkpoint `{ev['checkpoint']}`, {ev['data']}, engine {ev['engine']}.", "",
             "## Model card", ""]
    for section, rows in _card(ev, sections).items():
        parts += [f"### {section}", "", *(f"- **{k}**: {v}" for k, v in rows), ""]
    parts += ["## Per-class figures", "", _md_table(_PER_CLASS_HEADER, _per_class_rows(ev)), ""]
    if ev.get("engines"):
        parts += ["## Engines", "", "The same images through every engine.", "",
                  _md_table(_ENGINE_HEADER, _engine_rows(ev["engines"])), ""]
    if "writer_groups" in ev:
        parts += ["## Writer groups", "",
                  WRITER_GROUPS_NOTE, "",
                  _md_table(_GROUP_HEADER, _group_rows(ev["writer_groups"])), ""]
    for s in sections:
        parts += [f"## {s.title}", "", s.markdown.strip(), ""]
        parts += [f"![{name}]({rel})\n" for name, rel in s.figures.items()]
    parts += ["## Figures", ""]
    for key, rel in ev["plots"].items():
        parts += [f"### {PLOT_TITLES[key]}", "", f"![{PLOT_TITLES[key]}]({rel})", ""]
    return "\n".join(parts)


REPORT_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #3b6ea8; padding-bottom: .2em; }
h2 { font-size: 1.3em; margin-top: 1.6em; color: #27496d; }
h3 { font-size: 1.05em; margin-bottom: .3em; }
.card { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 1em; }
.card section { background: #f5f8fb; border: 1px solid #d7e1ec; border-radius: 6px;
                padding: .6em 1em; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; margin: 0; }
dt { font-weight: 600; } dd { margin: 0; }
table { border-collapse: collapse; margin: .5em 0; font-size: .92em; }
th, td { border: 1px solid #ccd; padding: .25em .6em; text-align: right; }
th { background: #eef2f7; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } img { max-width: 100%; height: auto; border: 1px solid #eee; }
code { background: #f0f0f0; padding: 0 .2em; }
"""


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt=\"{html.escape(alt)}\" src=\"data:image/png;base64,{data}\">"


def html_page(ev: dict[str, Any], files: dict[str, Path],
              sections: Sequence[Section] = (), base: Path | None = None) -> str:
    """The report as one self-contained HTML page, its figures embedded as data URIs.
    ``sections`` go after the built-in ones; their figures are relative to ``base`` (default:
    the folder above the first plot's, the report directory)."""
    esc = html.escape
    if base is None:
        base = next(iter(files.values())).parent.parent if files else Path(".")
    card = []
    for section, rows in _card(ev, sections).items():
        items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows)
        card.append(f"<section><h3>{esc(section)}</h3><dl>{items}</dl></section>")
    body = [f"<h1>{esc(_title(ev))}</h1>",
            f"<p>Checkpoint <code>{esc(ev['checkpoint'])}</code>, {esc(ev['data'])}, engine "
            f"{esc(ev['engine'])}.</p>",
            "<h2>Model card</h2>", f"<div class=\"card\">{''.join(card)}</div>",
            "<h2>Per-class figures</h2>", _html_table(_PER_CLASS_HEADER, _per_class_rows(ev))]
    if ev.get("engines"):
        body += ["<h2>Engines</h2>", "<p>The same images through every engine.</p>",
                 _html_table(_ENGINE_HEADER, _engine_rows(ev["engines"]))]
    if "writer_groups" in ev:
        body += ["<h2>Writer groups</h2>",
                 f"<p>{esc(WRITER_GROUPS_NOTE)}</p>",
                 _html_table(_GROUP_HEADER, _group_rows(ev["writer_groups"]))]
    for s in sections:
        body += [f"<h2 id=\"{esc(s.key)}\">{esc(s.title)}</h2>", s.html]
        for name, rel in s.figures.items():
            if (base / rel).is_file():
                body.append(f"<figure>{_img(base / rel, name)}</figure>")
    body.append("<h2>Figures</h2>")
    for key, path in files.items():
        body.append(f"<figure id=\"{key}\"><h3>{esc(PLOT_TITLES[key])}</h3>"
                    f"{_img(path, PLOT_TITLES[key])}</figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(_title(ev))}</title><style>{REPORT_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
