"""Compare CNNs with traditional baselines on one identical, seeded split.

:func:`compare` prepares the data once (the same stratified train/validation split and, with
``limit``, the same training subset for every entry), trains each CNN with
:func:`cnnlab.training.loop.fit` and fits each baseline on the same training images, scores
everything on the test split and writes, into ``out_dir``:

* ``compare.md``, ``compare.html`` (self-contained, the plot embedded), ``compare.csv``: one
  row per entry with accuracy and its bootstrap 95 % interval, macro F1, training time,
  batch-1 latency, parameters and size; published figures follow as rows marked
  ``literature``, never as our runs;
* ``compare.png``: accuracy against batch-1 latency;
* ``mcnemar.csv`` (and a table in the Markdown): McNemar p-values for every pair of our runs;
* ``compare.json``: all of the above with the settings that produced it;
* ``runs/<model>/``: each CNN's run directory (checkpoint, history).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.errors import ConfigError, DataError

if TYPE_CHECKING:
    from cnnlab.training.data import PreparedData

__all__ = ["LITERATURE", "CompareResult", "compare"]

# Published MNIST test accuracies, shown for orientation only. They come from other training
# sets, preprocessing and code than ours, so they are never mixed with our rows.
LITERATURE: list[dict[str, Any]] = [
    {"name": "LeNet-5", "accuracy": 0.9905,
     "source": "LeCun et al. 1998, Proc. IEEE 86(11): 0.95 % test error"},
    {"name": "SVM, Gaussian kernel", "accuracy": 0.986,
     "source": "MNIST database page (LeCun, Cortes, Burges): 1.4 % test error"},
    {"name": "k-NN, Euclidean (L2)", "accuracy": 0.969,
     "source": "MNIST database page (LeCun, Cortes, Burges): 3.09 % test error"},
    {"name": "HOG + SVM", "accuracy": 0.9936,
     "source": "published HOG + SVM figure quoted in the project's issue 4"},
    {"name": "best single CNN", "accuracy": 0.998,
     "source": "about 99.8 % for one CNN without ensembling, as quoted in the project's issue 4"},
]

COLUMNS = ["name", "kind", "accuracy", "accuracy_low", "accuracy_high", "macro_f1",
           "train_time_s", "latency_ms", "parameters", "size_mb", "train_images",
           "test_images", "source"]


@dataclass
class CompareResult:
    """What :func:`compare` returns: the rows (ours, then literature), McNemar p-values and the
    files written."""

    rows: list[dict[str, Any]]
    literature: list[dict[str, Any]]
    mcnemar_names: list[str]
    mcnemar_p: np.ndarray  # (E, E), NaN on the diagonal
    predictions: dict[str, np.ndarray]
    settings: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def _say(message: str, enabled: bool) -> None:
    if enabled:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


def _check_names(models: list[str], baselines: list[str]) -> None:
    from cnnlab.baselines import BASELINES
    from cnnlab.models import MODELS

    if not models and not baselines:
        raise ConfigError("compare needs at least one model or baseline; set models (such as "
                          "paper-cnn) or set baselines (such as hog-svm)")
    for name in models:
        MODELS.entry(name)
    for name in baselines:
        BASELINES.entry(name)
    names = list(models) + list(baselines)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"compare: {', '.join(map(repr, dupes))} given more than once")


def _baseline_latency_ms(predict: Any, image: np.ndarray, runs: int) -> float:
    """Median time of one prediction (features included) for a batch of one image."""
    for _ in range(2):
        predict(image)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        predict(image)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def compare(
    models: list[str],
    baselines: list[str],
    dataset: str = "mnist",
    data_dir: str | None = None,
    seed: int = 0,
    *,
    epochs: int | None = None,
    recipe: str | None = None,
    overrides: dict[str, Any] | None = None,
    limit: int | None = None,
    max_train_baseline: int | None = None,
    device: str = "cpu",
    out_dir: str | Path = "runs/compare",
    literature: bool | None = None,
    latency_runs: int = 50,
    n_boot: int = 1000,
    progress: bool = True,
    data: PreparedData | None = None,
) -> CompareResult:
    """Train and score every model and baseline on one seeded split; write the comparison.

    Args:
        models: CNN names (see ``cnnlab models``), trained with :func:`fit`.
        baselines: baseline names such as ``hog-svm`` (see :data:`cnnlab.baselines.BASELINES`).
        dataset, data_dir: the data, as for ``cnnlab train``.
        seed: the split, the training subset, CNN initialisation and baseline randomness.
        epochs, recipe, overrides: CNN training settings; ``overrides`` is a nested config
            layer (``{"optim": {"lr": 0.01}}``) applied after the recipe.
        limit: train every entry on the same stratified subset of this many images.
        max_train_baseline: fit the baselines on a stratified subset of at most this many of
            those images (kernel SVMs grow quadratically); None = the same images as the CNNs.
        literature: add the published reference rows; None = only for ``dataset="mnist"``.
        data: an already prepared :class:`~cnnlab.training.data.PreparedData` (tests), used
            instead of ``dataset``/``data_dir``/``limit``.

    Raises:
        RegistryError: an unknown model or baseline name (with a "did you mean").
        ConfigError: no entries, repeated names, or invalid training settings.
        DataError, DatasetNotFoundError: missing data or no test split.
    """
    from cnnlab.baselines import fit_baseline
    from cnnlab.config import resolve_config
    from cnnlab.evaluate import (
        bootstrap_ci,
        classification_report,
        mcnemar,
        measure_inference,
        predict_logits,
    )
    from cnnlab.models.summary import summarize
    from cnnlab.training.data import prepare_data
    from cnnlab.training.loop import fit

    models, baselines = list(models), list(baselines)
    _check_names(models, baselines)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"The 'limit' parameter of compare must be an int >= 1 or None. Got "
                          f"{limit!r} instead.")
    data_layer = {"dataset": dataset, "data_dir": data_dir or "", "limit": limit or 0}
    train_layer: dict[str, Any] = {"seed": seed, "device": device}
    if epochs is not None:
        train_layer["epochs"] = epochs
    # validate every CNN's settings before minutes of data loading and training
    configs = {m: resolve_config(overrides, {"model": {"name": m}, "data": data_layer,
                                             "train": train_layer}, recipe=recipe)
               for m in models}
    if data is None:
        data_cfg = resolve_config({"data": data_layer}).data
        data = prepare_data(data_cfg, seed=seed, progress=progress)
    if data.test is None or len(data.test) == 0:
        raise DataError(f"compare scores every entry on a test split, and {dataset!r} has none; "
                        "use a registered dataset or a folder with train/ and test/")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    test = data.test
    targets = test.targets.numpy()
    classes = data.classes
    rows: list[dict[str, Any]] = []
    predictions: dict[str, np.ndarray] = {}
    total = len(models) + len(baselines)

    def score(name: str, kind: str, preds: np.ndarray, **extra: Any) -> dict[str, Any]:
        report = classification_report(targets, preds, classes, specificity=False)
        acc, low, high = bootstrap_ci(targets, preds, "accuracy", n_boot=n_boot, seed=seed)
        predictions[name] = preds
        row = {"name": name, "kind": kind, "accuracy": acc, "accuracy_low": low,
               "accuracy_high": high, "macro_f1": report["macro"]["f1"],
               "test_images": len(targets), "source": "this run", **extra}
        _say(f"{name}: test accuracy {acc:.2%} [{low:.2%}, {high:.2%}]", progress)
        return row

    for i, name in enumerate(models, 1):
        _say(f"[{i}/{total}] CNN {name}: training on {len(data.train):,} images", progress)
        result = fit(configs[name], out_dir=out / "runs" / name, overwrite=True,
                     progress=progress, data=data)
        model = result.model.cpu().eval()
        logits = predict_logits(model, test.images, data.mean, data.std, batch_size=1000)
        _, c, h, w = test.images.shape
        timing = measure_inference(model, (c, h, w),
                                   latency_runs=latency_runs, batch_size=min(256, len(test)),
                                   throughput_runs=1, warmup=5)
        summary = summarize(model)
        rows.append(score(name, "cnn", logits.argmax(1).numpy(),
                          train_time_s=result.metrics["train_time_s"],
                          latency_ms=timing["latency_ms_p50"],
                          parameters=summary.total_params, size_mb=summary.param_mb,
                          train_images=len(data.train)))

    for i, name in enumerate(baselines, len(models) + 1):
        _say(f"[{i}/{total}] baseline {name}", progress)
        fitted = fit_baseline(name, data.train, seed=seed, max_train=max_train_baseline,
                              progress=progress)
        preds = fitted.predict(test.images, progress=progress)
        one = test.images[:1].numpy()
        latency = _baseline_latency_ms(fitted.predict, one, max(1, latency_runs // 5))
        rows.append(score(name, "baseline", preds, train_time_s=fitted.fit_time_s,
                          latency_ms=latency, parameters=fitted.stored_values,
                          size_mb=fitted.size_mb, train_images=fitted.train_images))

    names = [r["name"] for r in rows]
    p_values = np.full((len(rows), len(rows)), np.nan)
    for a in range(len(rows)):
        for b in range(a + 1, len(rows)):
            _, p = mcnemar(targets, predictions[names[a]], predictions[names[b]])
            p_values[a, b] = p_values[b, a] = p

    show_literature = dataset == "mnist" if literature is None else literature
    lit = [{"name": r["name"], "kind": "literature", "accuracy": r["accuracy"],
            "source": r["source"]} for r in LITERATURE] if show_literature else []
    settings = {"dataset": dataset, "seed": seed, "limit": limit, "epochs": epochs,
                "recipe": recipe, "overrides": overrides or {},
                "max_train_baseline": max_train_baseline, "device": device, "n_boot": n_boot,
                "train_images": len(data.train), "test_images": len(test),
                "latency": "batch 1, median; CNNs: model forward on normalised input; baselines: "
                           "feature extraction and prediction"}
    rows.sort(key=lambda r: -r["accuracy"])
    compared = CompareResult(rows=rows, literature=lit, mcnemar_names=names,
                             mcnemar_p=p_values, predictions=predictions, settings=settings)
    compared.files = _write(compared, out)
    _say(f"comparison written to {out}/ (compare.md, compare.html, compare.csv, compare.png, "
         "mcnemar.csv)", progress)
    return compared


# --- output ----------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "" if x is None else f"{x:.2%}".replace("%", " %")


def _p_text(p: float) -> str:
    if not np.isfinite(p):
        return "—"
    return "< 1e-4" if p < 1e-4 else f"{p:.4f}"


def _table_cells(row: dict[str, Any]) -> list[str]:
    if row["kind"] == "literature":
        return [row["name"], "literature (published, not our run)", _pct(row["accuracy"]),
                "—", "—", "—", "—", "—"]
    return [row["name"], row["kind"],
            f"{_pct(row['accuracy'])} [{_pct(row['accuracy_low'])}, {_pct(row['accuracy_high'])}]",
            f"{row['macro_f1']:.4f}", f"{row['train_time_s']:.1f}", f"{row['latency_ms']:.3f}",
            f"{row['parameters']:,}", f"{row['size_mb']:.3f}"]


HEADER = ["entry", "kind", "test accuracy [95 % CI]", "macro F1", "train time (s)",
          "batch-1 latency (ms)", "parameters*", "size (MB)*"]

NOTES = [
    "Accuracy intervals: percentile bootstrap over the test images ({n_boot} resamples).",
    "Train time: CNNs, the epochs of fit() (no data loading); baselines, feature extraction "
    "plus the classifier's fit.",
    "Batch-1 latency: median over repeated single-image predictions on this machine; for "
    "baselines it includes feature extraction.",
    "*Parameters: CNN weights; for baselines the values the classifier stores to predict "
    "(support vectors and dual coefficients, the k-NN training set, tree nodes). Size: float32 "
    "weights for CNNs, the pickled estimator for baselines.",
    "McNemar p-values compare two of our runs on the same test images; p < 0.05 means their "
    "error rates differ beyond chance.",
]


def _markdown(result: CompareResult) -> str:
    s = result.settings
    lines = [f"# Comparison on {s['dataset']}", "",
             f"Seed {s['seed']}; {s['train_images']:,} training images, {s['test_images']:,} "
             f"test images; the same split for every entry.", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in result.rows:
        lines.append("| " + " | ".join(_table_cells(row)) + " |")
    if result.literature:
        lines.append("| **Literature (published figures, not our runs)** |" + " |" * 7)
        for row in result.literature:
            lines.append("| " + " | ".join(_table_cells(row)) + " |")
    lines += ["", *[f"- {n.format(n_boot=s['n_boot'])}" for n in NOTES]]
    if result.literature:
        lines += ["", "Literature sources:", ""]
        lines += [f"- {r['name']} ({_pct(r['accuracy'])}): {r['source']}"
                  for r in result.literature]
    names = result.mcnemar_names
    if len(names) > 1:
        lines += ["", "## McNemar p-values", "", "| | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for i, a in enumerate(names):
            lines.append(f"| {a} | " + " | ".join(_p_text(p) for p in result.mcnemar_p[i]) + " |")
    lines += ["", "![accuracy versus batch-1 latency](compare.png)", ""]
    return "\n".join(lines)


def _html(result: CompareResult, png: bytes) -> str:
    e = html.escape
    s = result.settings
    head = "".join(f"<th>{e(h)}</th>" for h in HEADER)
    body = []
    for row in result.rows:
        body.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in _table_cells(row)) + "</tr>")
    if result.literature:
        body.append(f'<tr class="lit-head"><td colspan="{len(HEADER)}">Literature: published '
                    "figures, not our runs</td></tr>")
        for row in result.literature:
            body.append('<tr class="literature">' + "".join(
                f"<td>{e(c)}</td>" for c in _table_cells(row)) + "</tr>")
    notes = "".join(f"<li>{e(n.format(n_boot=s['n_boot']))}</li>" for n in NOTES)
    sources = "".join(f"<li>{e(r['name'])} ({e(_pct(r['accuracy']))}): {e(r['source'])}</li>"
                      for r in result.literature)
    names = result.mcnemar_names
    mc = ""
    if len(names) > 1:
        mc_head = "<th></th>" + "".join(f"<th>{e(n)}</th>" for n in names)
        mc_rows = "".join(
            f"<tr><th>{e(a)}</th>" + "".join(f"<td>{e(_p_text(p))}</td>"
                                             for p in result.mcnemar_p[i]) + "</tr>"
            for i, a in enumerate(names))
        mc = (f"<h2>McNemar p-values</h2><table><tr>{mc_head}</tr>{mc_rows}</table>")
    img = base64.b64encode(png).decode()
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Comparison on {e(s['dataset'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
td:first-child, th:first-child, td:nth-child(2) {{ text-align: left; }}
tr.literature td {{ color: #666; font-style: italic; background: #f6f6f6; }}
tr.lit-head td {{ font-weight: bold; background: #eee; text-align: left; }}
</style></head><body>
<h1>Comparison on {e(s['dataset'])}</h1>
<p>Seed {s['seed']}; {s['train_images']:,} training images, {s['test_images']:,} test images;
the same split for every entry.</p>
<table><tr>{head}</tr>{''.join(body)}</table>
<ul>{notes}</ul>
{'<h3>Literature sources</h3><ul>' + sources + '</ul>' if sources else ''}
{mc}
<h2>Accuracy versus batch-1 latency</h2>
<img alt="accuracy versus batch-1 latency" src="data:image/png;base64,{img}">
</body></html>
"""


def _plot(result: CompareResult) -> bytes:
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(7, 4.5), dpi=110)
    ax = fig.add_subplot()
    styles = {"cnn": ("o", "tab:blue", "CNN (this run)"),
              "baseline": ("s", "tab:orange", "baseline (this run)")}
    for kind, (marker, color, label) in styles.items():
        rows = [r for r in result.rows if r["kind"] == kind]
        if not rows:
            continue
        x = [max(r["latency_ms"], 1e-3) for r in rows]
        y = [100 * r["accuracy"] for r in rows]
        err = [[100 * (r["accuracy"] - r["accuracy_low"]) for r in rows],
               [100 * (r["accuracy_high"] - r["accuracy"]) for r in rows]]
        ax.errorbar(x, y, yerr=err, fmt=marker, color=color, label=label, capsize=3)
        for r, xi, yi in zip(rows, x, y, strict=True):
            ax.annotate(r["name"], (xi, yi), textcoords="offset points", xytext=(5, 4),
                        fontsize=8)
    # published figures: dotted lines, labels staggered along x since they lie close together
    for i, r in enumerate(sorted(result.literature, key=lambda r: r["accuracy"])):
        ax.axhline(100 * r["accuracy"], color="grey", linestyle=":", linewidth=0.8)
        ax.annotate(f"{r['name']} (lit.)", (0.01 + 0.2 * i, 100 * r["accuracy"]),
                    xycoords=("axes fraction", "data"), fontsize=6.5, color="dimgrey",
                    va="bottom")
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    # label the 2x and 5x minor ticks too: a latency axis often spans less than a decade
    ax.xaxis.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    if result.literature:  # room for the labels above the 99.8 % line
        ax.set_ylim(top=max(ax.get_ylim()[1], 100.6))
    ax.set_xlabel("batch-1 latency (ms, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Accuracy versus latency on {result.settings['dataset']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _write(result: CompareResult, out: Path) -> dict[str, Path]:
    files = {k: out / f"compare.{k}" for k in ("md", "html", "csv", "png", "json")}
    files["mcnemar"] = out / "mcnemar.csv"
    png = _plot(result)
    files["png"].write_bytes(png)
    files["md"].write_text(_markdown(result), encoding="utf-8")
    files["html"].write_text(_html(result, png), encoding="utf-8")
    with files["csv"].open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in [*result.rows, *result.literature]:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in row.items() if k in COLUMNS})
    with files["mcnemar"].open("w", newline="", encoding="utf-8") as f:
        p_writer = csv.writer(f, lineterminator="\n")
        p_writer.writerow(["", *result.mcnemar_names])
        for name, ps in zip(result.mcnemar_names, result.mcnemar_p, strict=True):
            p_writer.writerow([name, *("" if not np.isfinite(p) else f"{p:.6g}" for p in ps)])
    payload = {"settings": result.settings, "rows": result.rows, "literature": result.literature,
               "mcnemar": {"names": result.mcnemar_names,
                           "p_values": [[None if not np.isfinite(p) else float(p) for p in ps]
                                        for ps in result.mcnemar_p]}}
    files["json"].write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return files
