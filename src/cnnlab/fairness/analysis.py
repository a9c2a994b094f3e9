"""``cnnlab fairness``: how a trained model's errors fall across groups of writers or images,
written as ``fairness.json``, figures and a Fairness section of the run's report.

:func:`analyze_fairness` evaluates the model on a split (MNIST test by default), resolves the
groups (:mod:`cnnlab.fairness.groups`), computes the group figures with writer-bootstrap
intervals (:mod:`cnnlab.fairness.metrics`) and, where writers are known, the per-writer
breakdown; :func:`fairness_section` renders them for the report.
"""

from __future__ import annotations

import html
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import ConfigError
from cnnlab.evaluate.sections import Section, write_section
from cnnlab.fairness.groups import resolve_groups
from cnnlab.fairness.metrics import group_metrics, writer_breakdown

__all__ = ["analyze_fairness", "fairness_section", "report_dir_for", "summary_lines"]

log = logging.getLogger("cnnlab")
PLOTS = {"groups": "plots/fairness_groups.png", "writers": "plots/fairness_writers.png",
         "worst_writers": "plots/fairness_worst_writers.png"}


def report_dir_for(checkpoint: Path, origin: str, name: str, out_dir: str | Path | None
                   ) -> Path:
    """Where the report of this evaluation lives (as :func:`cnnlab.evaluate.build_report`
    puts it): ``out_dir``; else the run directory (``runs/default`` for the packaged model),
    and ``eval/<data name>/`` under it for other data."""
    import re

    from cnnlab.inference.checkpoint import default_model_path

    if out_dir is not None:
        return Path(out_dir)
    try:
        packaged = checkpoint.resolve() == default_model_path().resolve()
    except OSError:
        packaged = False
    out = Path("runs") / "default" if packaged else checkpoint.parent
    if origin == "external":
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).name or "data").strip("-.") or "data"
        out = out / "eval" / slug
    return out


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"The '{name}' parameter of analyze_fairness must be an int from {low} "
                          f"to {high}. Got {value!r} instead.")


def analyze_fairness(checkpoint: str | Path, *, group: str = "population",
                     dataset: str | None = None, data_dir: str | None = None,
                     split: str = "test", bins: int = 4, n_boot: int = 1000,
                     worst: int = 10, seed: int = 0, device: str = "cpu",
                     batch_size: int = 1000, out_dir: str | Path | None = None,
                     write: bool = True, progress: bool = False) -> dict[str, Any]:
    """Evaluate ``checkpoint`` by group and (with ``write``) add the Fairness section to its
    report.

    Args:
        checkpoint: a run directory or checkpoint file.
        group: ``population``, ``writer``, ``derived:<attribute>`` or a ``path,group`` CSV.
        dataset, data_dir, split: the data (as ``cnnlab evaluate``; default MNIST test).
        bins: quantile groups of a derived attribute (2-20).
        n_boot: bootstrap draws (10-100000); worst: writers listed (1-100); seed: bootstrap.
        out_dir: the report directory (default: the run's, as ``cnnlab report`` uses).

    Returns:
        The JSON-ready figures (also written to ``fairness.json`` in the report directory).

    Raises:
        ConfigError: an option out of range or an unknown group kind.
        CheckpointError, DataError, DatasetNotFoundError: see ``cnnlab evaluate``; a group
            file that does not match the folder; writer groups without writer metadata.
    """
    import torch.nn.functional as F

    from cnnlab.deploy.engine import load_with_engine
    from cnnlab.device import resolve_device
    from cnnlab.training.data import load_split

    _check_int("bins", bins, 2, 20)
    _check_int("n_boot", n_boot, 10, 100_000)
    _check_int("worst", worst, 1, 100)
    _check_int("batch_size", batch_size, 1, 1_000_000)
    t0 = time.perf_counter()
    model = load_with_engine(Path(checkpoint), device=resolve_device(device), engine="torch")
    ckpt = Path(model.path) if model.path else Path(checkpoint)
    ds, src = load_split(model, split, dataset=dataset, data_dir=data_dir, progress=progress)
    folder = Path(src.name) if Path(src.name).is_dir() else None
    groups = resolve_groups(group, ds, name=src.name, split=src.split, data_dir=data_dir,
                            folder=folder, bins=bins)
    logits = model.logits(ds.images, batch_size=batch_size)
    probs = F.softmax(logits.double(), dim=1).numpy()
    targets = ds.targets.numpy()
    preds = probs.argmax(axis=1)
    p_true = probs[np.arange(len(targets)), targets]
    classes = list(model.classes)
    result: dict[str, Any] = {
        "checkpoint": str(ckpt), "dataset": src.name, "split": src.split, "data": src.detail,
        "group": group, "group_kind": groups.kind, "description": groups.description,
        "samples": len(targets),
    }
    if groups.kind != "writer":
        result["metrics"] = group_metrics(targets, preds, p_true, groups.labels, groups.writers,
                                          classes=classes, order=groups.order, n_boot=n_boot,
                                          seed=seed)
    if groups.writers is not None:
        result["writers"] = writer_breakdown(targets, preds, groups.writers, worst=worst,
                                             n_boot=n_boot, seed=seed)
    result["time_s"] = round(time.perf_counter() - t0, 3)
    if write:
        out = report_dir_for(ckpt, src.origin, src.name, out_dir)
        result["files"] = _write(out, result, ds.images.numpy(), targets, preds, groups.writers,
                                 classes)
    return result


def _write(out: Path, result: dict[str, Any], images: np.ndarray, targets: np.ndarray,
           preds: np.ndarray, writers: np.ndarray | None, classes: list[str]) -> dict[str, str]:
    from cnnlab._io import atomic_write_text, clean_json
    from cnnlab.evaluate.plots import plot_sample_grid
    from cnnlab.fairness.plots import plot_group_accuracy, plot_writer_histogram

    figures: dict[str, str] = {}
    m = result.get("metrics")
    if m and m["groups"]:
        plot_group_accuracy(m["groups"], out / PLOTS["groups"],
                            title=f"Error rate by {result['group_kind']}")
        figures["groups"] = PLOTS["groups"]
    w = result.get("writers")
    if w and writers is not None:
        plot_writer_histogram(w["per_writer_accuracy"], out / PLOTS["writers"],
                              edges=w["histogram"]["edges"])
        figures["writers"] = PLOTS["writers"]
        rows = []
        for entry in w["worst"][:6]:  # a row of 8 digits per writer, misread ones first
            idx = np.flatnonzero(writers == entry["writer"])
            idx = idx[np.argsort(targets[idx] == preds[idx], kind="stable")][:8]
            rows.append(np.concatenate([idx, np.full(8 - len(idx), -1)]) if len(idx) < 8
                        else idx)
        order = np.concatenate(rows) if rows else np.array([], dtype=np.int64)
        keep = order[order >= 0]
        if len(keep):
            plot_sample_grid(images[keep], targets[keep], preds[keep], classes,
                             out / PLOTS["worst_writers"], cols=8)
            figures["worst_writers"] = PLOTS["worst_writers"]
    result["figures"] = figures
    path = atomic_write_text(out / "fairness.json",
                             json.dumps(clean_json(result), indent=2) + "\n")
    report = write_section(out, fairness_section(result))
    files = {"json": str(path), **{k: str(out / v) for k, v in figures.items()}}
    if report is not None:
        files["report"] = str(report)
    else:
        log.info("fairness: %s has no report yet; the section appears when `cnnlab report` "
                 "builds it", out)
    return files


# --- the report section ---------------------------------------------------------------------

def _pct(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.2f} %"


def _pp(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:+.2f} pp"


def _ci(ci: list[float] | None, unit: str = "pct") -> str:
    if not ci or any(v is None or not math.isfinite(v) for v in ci):
        return "n/a"
    if unit == "pct":
        return f"[{100 * ci[0]:.2f}, {100 * ci[1]:.2f}] %"
    if unit == "pp":
        return f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}] pp"
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["group", "images", "writers", "accuracy", "error rate", "95 % CI", "log-loss"]
    rows = []
    for g in result["metrics"]["groups"]:
        rows.append([g["name"] + (" (small)" if g["small"] else ""), str(g["samples"]),
                     str(g["clusters"]) if result["metrics"]["bootstrap"]["unit"] == "writer"
                     else "-", _pct(g["accuracy"]), _pct(g["error_rate"]),
                     _ci(g["error_rate_ci"]), f"{g['log_loss']:.4f}"])
    return header, rows


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    m = result.get("metrics")
    if m:
        b = m["bootstrap"]
        lines.append(f"Groups: {result['description']}. Intervals: 95 % bootstrap, "
                     f"{b['n_boot']} draws resampling {b['unit']}s ({b['clusters']}), not single "
                     "digits." if b["unit"] == "writer" else
                     f"Groups: {result['description']}. Intervals: 95 % bootstrap over images "
                     "(no writer metadata for this data).")
        if "gap" in m:
            gap = m["gap"]
            lines.append(f"Gap: {gap['definition']} = {_pp(gap['value'])}, 95 % CI "
                         f"{_ci(gap['ci'], 'pp')}"
                         + (" (significant)." if gap["significant"] else " (not significant)."))
        if "worst_group" in m:
            wg = m["worst_group"]
            lines.append(f"Worst group: {wg['name']}, accuracy {_pct(wg['accuracy'])} "
                         f"{_ci(wg['accuracy_ci'])}.")
            d, r = m["differences"], m["ratios"]
            lines.append(f"Difference (max - min): accuracy {_pp(d['accuracy']['value'])} "
                         f"{_ci(d['accuracy']['ci'], 'pp')}, log-loss "
                         f"{d['log_loss']['value']:.4f} {_ci(d['log_loss']['ci'], 'x')}. "
                         f"Ratio (min / max): accuracy {r['accuracy']['value']:.4f} "
                         f"{_ci(r['accuracy']['ci'], 'x')}, error rate "
                         f"{r['error_rate']['value']:.3f} {_ci(r['error_rate']['ci'], 'x')}.")
        for warning in m["warnings"]:
            lines.append(f"Warning: {warning}.")
    w = result.get("writers")
    if w:
        ws = w["worst_share"]
        lines.append(f"Writers: {w['writers']}, per-writer accuracy median "
                     f"{_pct(w['accuracy_median'])}, lowest {_pct(w['accuracy_min'])}; "
                     f"{w['perfect_writers']} with no error. The worst {ws['writers']} writers "
                     f"({100 * ws['fraction_of_writers']:.0f} %) make "
                     f"{_pct(ws['share_of_errors'])} of all errors {_ci(ws['ci'])}.")
    return lines


def _eo_rows(m: dict[str, Any]) -> list[list[str]]:
    return [[c, _pp(v["recall_gap"]), _ci(v["ci"], "pp"), str(v["lowest"])]
            for c, v in m.get("equal_opportunity", {}).items()]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def fairness_section(result: dict[str, Any]) -> Section:
    """The report's Fairness section and model-card rows for :func:`analyze_fairness`'s
    result."""
    md: list[str] = []
    parts: list[str] = []
    lines = summary_lines(result)
    md += [*lines, ""]
    parts += [f"<p>{html.escape(line)}</p>" for line in lines]
    m = result.get("metrics")
    if m:
        header, rows = _rows(result)
        md += [_md_table(header, rows), ""]
        parts.append(_html_table(header, rows))
        eo = _eo_rows(m)
        if eo:
            eo_header = ["class", "recall gap (max - min)", "95 % CI", "lowest recall"]
            md += ["Equal opportunity, per class (recall gaps between groups of at least "
                   f"{m['min_group']} images):", "", _md_table(eo_header, eo), ""]
            parts += ["<p>Equal opportunity, per class (recall gaps between groups of at least "
                      f"{m['min_group']} images):</p>", _html_table(eo_header, eo)]
    w = result.get("writers")
    if w:
        wr = [[str(e["writer"]), str(e["images"]), str(e["errors"]), _pct(e["accuracy"])]
              for e in w["worst"]]
        wh = ["worst writers", "images", "errors", "accuracy"]
        md += [_md_table(wh, wr), ""]
        parts.append(_html_table(wh, wr))
        if "worst_writers" in result.get("figures", {}):
            note = ("The worst writers' digits, one row of up to 8 per writer (misread ones "
                    "first), with what the model read.")
            md.append(note)
            parts.append(f"<p>{html.escape(note)}</p>")
    card = _card(result)
    return Section(key="fairness", title="Fairness", markdown="\n".join(md).strip() + "\n",
                   html="\n".join(parts), card=card,
                   figures=dict(result.get("figures", {})))


def _card(result: dict[str, Any]) -> list[tuple[str, str]]:
    m = result.get("metrics") or {}
    rows: list[tuple[str, str]] = []
    if "gap" in m:
        by = {g["name"]: g for g in m["groups"]}
        names = " vs ".join(f"{n} {_pct(by[n]['error_rate'])}" for n in list(by)[:2])
        rows.append((f"error by {result['group_kind']}",
                     f"{names}; gap {_pp(m['gap']['value'])} {_ci(m['gap']['ci'], 'pp')} "
                     f"(writer bootstrap)" if m["bootstrap"]["unit"] == "writer" else
                     f"{names}; gap {_pp(m['gap']['value'])} {_ci(m['gap']['ci'], 'pp')}"))
    elif "worst_group" in m:
        rows.append((f"worst {result['group_kind']} group",
                     f"{m['worst_group']['name']}: accuracy {_pct(m['worst_group']['accuracy'])}"
                     f" {_ci(m['worst_group']['accuracy_ci'])}"))
    w = result.get("writers")
    if w:
        ws = w["worst_share"]
        rows.append(("errors from the worst 10 % of writers",
                     f"{_pct(ws['share_of_errors'])} {_ci(ws['ci'])}"))
    return rows
