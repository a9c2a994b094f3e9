"""What a finished (or interrupted) study leaves in ``--out``.

- ``trials.csv``     every trial: state, parameters, objective values, epochs, time
- ``best.toml``      the best configuration as a config file: ``cnnlab train -c best.toml``
                     trains it again (single objective)
- ``pareto.csv``     the Pareto front (two objectives)
- ``plots/*.png``    optimisation history, parameter importances, parallel coordinates,
                     Pareto front
- ``report.md``, ``report.html``  all of it on one page
- ``tune.json``      the summary, including the best configuration's test accuracy: the test
                     split is used here once, for that configuration only
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import warnings
from pathlib import Path
from typing import Any

from cnnlab.config import dump_toml
from cnnlab.tune.search import DataCache, TuneSettings, is_finished, load_optuna, trial_config
from cnnlab.tune.space import OBJECTIVES

__all__ = ["finish", "headline", "trial_rows", "trials_to_reach"]

PLOT_TITLES = {
    "history": "Optimisation history",
    "importances": "Parameter importances",
    "parallel": "Parallel coordinates",
    "pareto": "Pareto front",
}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else str(v)


def trial_rows(study: Any, settings: TuneSettings) -> list[dict[str, Any]]:
    """One row per trial, in trial order."""
    keys = settings.space.keys
    objectives = settings.space.objectives
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name.lower()}
        for k in keys:
            row[k] = t.params.get(k)
        values = t.values if t.values is not None else [None] * len(objectives)
        for name, v in zip(objectives, values, strict=True):
            row[name] = v
        row["epochs_run"] = t.user_attrs.get("epochs_run")
        row["train_time_s"] = t.user_attrs.get("train_time_s")
        row["parameters"] = t.user_attrs.get("params_count")
        row["duration_s"] = (round(t.duration.total_seconds(), 1) if t.duration is not None
                             else None)
        row["note"] = t.user_attrs.get("error", "")
        rows.append(row)
    return rows


def trials_to_reach(study: Any, threshold: float) -> int | None:
    """How many trials (of any state, in order) the study took until a complete trial's
    validation accuracy reached ``threshold``; None if none did."""
    for i, t in enumerate(study.get_trials(deepcopy=False), start=1):
        if t.state.name == "COMPLETE" and t.values and t.values[0] >= threshold:
            return i
    return None


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(v) for k, v in row.items()})
    path.write_text(buf.getvalue())


def _md_table(rows: list[dict[str, Any]], limit: int | None = None) -> str:
    if not rows:
        return "(no trials)"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows[:limit]:
        lines.append("| " + " | ".join(_fmt(row[h]) for h in header) + " |")
    return "\n".join(lines)


def _html_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>(no trials)</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r.values())
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --- plots ------------------------------------------------------------------------------------

def _save(ax_or_fig: Any, path: Path) -> Path:
    fig = ax_or_fig.figure if hasattr(ax_or_fig, "figure") and ax_or_fig.figure else ax_or_fig
    if hasattr(ax_or_fig, "flat"):  # an array of axes
        fig = ax_or_fig.flat[0].figure
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def make_plots(study: Any, settings: TuneSettings, plot_dir: Path) -> dict[str, Path]:
    """The study's figures as PNG files; a figure that needs more trials is skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    optuna = load_optuna()
    vis = optuna.visualization.matplotlib
    plot_dir.mkdir(parents=True, exist_ok=True)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    files: dict[str, Path] = {}
    if not complete:
        return files
    multi = settings.space.multi_objective
    target = (lambda t: t.values[0]) if multi else None
    name = "validation accuracy"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's matplotlib backend is "experimental"
        plt.rcParams["figure.figsize"] = (8, 4.5)
        files["history"] = _save(vis.plot_optimization_history(
            study, target=target, target_name=name), plot_dir / "history.png")
        varied = [p.key for p in settings.space.params
                  if len({str(t.params.get(p.key)) for t in complete}) > 1]
        if len(complete) >= 2 and varied:
            try:
                files["importances"] = _save(vis.plot_param_importances(
                    study, target=target, target_name=name), plot_dir / "importances.png")
            except (RuntimeError, ValueError, ZeroDivisionError):
                plt.close("all")  # too few distinct trials for an importance estimate
            files["parallel"] = _save(vis.plot_parallel_coordinate(
                study, target=target, target_name=name), plot_dir / "parallel.png")
        if multi:
            files["pareto"] = _pareto_plot(study, settings, plot_dir / "pareto.png")
    return files


def _pareto_plot(study: Any, settings: TuneSettings, path: Path) -> Path:
    import matplotlib.pyplot as plt

    second = settings.space.objectives[1]
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    front = sorted(study.best_trials, key=lambda t: t.values[1])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([t.values[1] for t in complete], [t.values[0] for t in complete], s=18,
               color="#9aa7b8", label="trials")
    ax.plot([t.values[1] for t in front], [t.values[0] for t in front], "-o", color="#c0392b",
            label="Pareto front")
    for t in front:
        ax.annotate(f"#{t.number}", (t.values[1], t.values[0]), fontsize=7,
                    xytext=(3, -9), textcoords="offset points")
    ax.set_xlabel(OBJECTIVES[second][1])
    ax.set_ylabel("validation accuracy")
    if second == "params":
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(f"{settings.study_name}: accuracy against {second}")
    return _save(fig, path)


# --- the best configuration -------------------------------------------------------------------

def _test_best(settings: TuneSettings, best: Any) -> dict[str, Any]:
    """The best configuration's accuracy on the held-back test split (the only use of it)."""
    from cnnlab.inference.batched import evaluate_loss_accuracy, predict_logits
    from cnnlab.inference.model import load_model
    from cnnlab.training.loop import fit

    cfg = trial_config(settings.base, best.params)
    data, test = DataCache().get(cfg)
    if test is None:
        return {"test_note": f"dataset {cfg.data.dataset!r} has no test split"}
    ckpt = best.user_attrs.get("checkpoint")
    if ckpt and (settings.out / ckpt).is_file():
        model = load_model(settings.out / ckpt).classifier
        source = ckpt
    else:  # trained by a worker that did not keep it: train it again (deterministic)
        model = fit(cfg, data=data, progress=settings.progress).model
        source = "retrained"
    spec = model.input_spec
    logits = predict_logits(model, test.images, spec.mean, spec.std,
                            batch_size=cfg.train.eval_batch_size)
    loss, acc = evaluate_loss_accuracy(logits, test.targets)
    return {"test_accuracy": round(acc, 6), "test_loss": round(loss, 6),
            "test_images": len(test), "test_model": source}


def finish(study: Any, settings: TuneSettings) -> dict[str, Any]:
    """Write the study's results into ``settings.out`` and return the summary."""
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study, settings)
    _write_csv(out / "trials.csv", rows)
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    durations = [t.duration.total_seconds() for t in trials if t.duration is not None]
    summary: dict[str, Any] = {
        "study": settings.study_name, "storage": settings.storage_url,
        "space": settings.space.name, "sampler": settings.sampler_name,
        "pruner": settings.pruner_name, "objectives": list(settings.space.objectives),
        "model": settings.base.model.name, "dataset": settings.base.data.dataset,
        "target_trials": settings.target_trials(), "trials": len(trials),
        "finished": sum(map(is_finished, trials)), "states": counts,
        "trial_time_s": round(sum(durations), 1),
        "wall_time_s": _wall_time(trials),
    }
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if complete and not settings.space.multi_objective:
        best = max(complete, key=lambda t: (t.value, -t.number))
        cfg = trial_config(settings.base, best.params)
        header = (f"# The best configuration of study {settings.study_name!r} "
                  f"(trial {best.number}, validation accuracy {best.value:.4f}).\n"
                  f"# Train it again with: cnnlab train -c {out / 'best.toml'}\n")
        (out / "best.toml").write_text(header + dump_toml(cfg.to_dict()))
        summary["best"] = {"trial": best.number, "val_accuracy": round(best.value, 6),
                           "params": best.params, "config": str(out / "best.toml"),
                           "trials_to_reach": trials_to_reach(study, best.value),
                           **_test_best(settings, best)}
    if complete and settings.space.multi_objective:
        front = sorted(study.best_trials, key=lambda t: t.values[1])
        second = settings.space.objectives[1]
        pareto = [{"trial": t.number, **t.params, "val_accuracy": round(t.values[0], 6),
                   second: round(t.values[1], 6) if second == "latency_ms" else int(t.values[1]),
                   "parameters": t.user_attrs.get("params_count")} for t in front]
        _write_csv(out / "pareto.csv", pareto)
        summary["pareto"] = pareto
    import matplotlib

    with matplotlib.rc_context():  # optuna's plots switch the style to ggplot; keep it local
        files = make_plots(study, settings, out / "plots")
    summary["plots"] = {k: str(v) for k, v in files.items()}
    (out / "report.md").write_text(_markdown(summary, rows, files))
    (out / "report.html").write_text(_html(summary, rows, files))
    (out / "tune.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _wall_time(trials: list[Any]) -> float | None:
    """Seconds from the first trial's start to the last trial's end (all runs together)."""
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    if not starts or not ends:
        return None
    return round((max(ends) - min(starts)).total_seconds(), 1)


def headline(summary: dict[str, Any]) -> list[str]:
    lines = [f"Study {summary['study']!r}: {summary['sampler']} search over space "
             f"{summary['space']!r} ({summary['model']} on {summary['dataset']}), pruner "
             f"{summary['pruner']}; {summary['finished']} of {summary['target_trials']} trials "
             f"finished (" + ", ".join(f"{v} {k}" for k, v in summary["states"].items())
             + f"); {summary['trial_time_s'] / 60:.1f} min of trial time"
             + (f", {summary['wall_time_s'] / 60:.1f} min from first start to last end."
                if summary.get("wall_time_s") is not None else ".")]
    best = summary.get("best")
    if best:
        test = (f", test accuracy {best['test_accuracy']:.2%} on {best['test_images']:,} "
                "images (the test split's only use)" if "test_accuracy" in best else "")
        lines.append(f"Best: trial {best['trial']}, validation accuracy "
                     f"{best['val_accuracy']:.2%}{test}; parameters "
                     + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in best["params"].items()) + ".")
    return lines


def _markdown(summary: dict[str, Any], rows: list[dict[str, Any]], files: dict[str, Path]) -> str:
    parts = [f"# Search: {summary['study']}", "", *headline(summary), ""]
    if "pareto" in summary:
        parts += ["## Pareto front", "", _md_table(summary["pareto"]), ""]
    ranked = sorted(rows, key=lambda r: (r.get("val_accuracy") is None,
                                         -(r.get("val_accuracy") or 0)))
    parts += ["## Trials (best first)", "", _md_table(ranked), ""]
    parts += ["## Figures", ""] + [f"![{PLOT_TITLES[k]}](plots/{p.name})" for k, p in files.items()]
    return "\n".join(parts) + "\n"


def _html(summary: dict[str, Any], rows: list[dict[str, Any]], files: dict[str, Path]) -> str:
    from cnnlab.evaluate.documents import REPORT_CSS

    esc = html.escape
    body = [f"<h1>Search: {esc(summary['study'])}</h1>"]
    body += [f"<p>{esc(line)}</p>" for line in headline(summary)]
    if "pareto" in summary:
        body += ["<h2>Pareto front</h2>", _html_table(summary["pareto"])]
    for key, path in files.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        body.append(f"<figure id=\"{key}\"><h3>{esc(PLOT_TITLES[key])}</h3><img alt=\""
                    f"{esc(PLOT_TITLES[key])}\" src=\"data:image/png;base64,{data}\"></figure>")
    ranked = sorted(rows, key=lambda r: (r.get("val_accuracy") is None,
                                         -(r.get("val_accuracy") or 0)))
    body += ["<h2>Trials (best first)</h2>", _html_table(ranked)]
    title = f"Search: {summary['study']}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{REPORT_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")

