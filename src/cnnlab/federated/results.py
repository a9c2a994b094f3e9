"""What a federated run leaves: a run directory that ``evaluate``, ``predict`` and ``serve``
accept like a trained one.

``model.pt`` (the final global model, an ordinary checkpoint), ``config.toml``,
``splits.json`` (the server's validation and the test split), ``metrics.json``,
``rounds.csv`` (per round: the global model's validation and test figures, the clients
trained, failures, client accuracies, bytes sent), ``federated.json`` (the settings, every
round with every client's figures, the privacy budget) and ``plots/federated_accuracy.png``.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

from torch import nn

from cnnlab._io import atomic_write_bytes
from cnnlab.config import Config, dump_toml
from cnnlab.evaluate.sections import Section, write_section
from cnnlab.federated.settings import FederatedSettings
from cnnlab.inference.checkpoint import save_checkpoint
from cnnlab.models import InputSpec
from cnnlab.training.data import MANIFEST_NAME, PreparedData
from cnnlab.training.loop import checkpoint_payload

__all__ = ["ROUND_FIELDS", "RoundLog", "report_section", "write_run"]

log = logging.getLogger("cnnlab")

ROUND_FIELDS = ["round", "val_accuracy", "val_loss", "test_accuracy", "test_loss",
                "clients_trained", "failures", "client_accuracy_mean", "client_accuracy_min",
                "client_accuracy_max", "train_loss", "bytes_down", "bytes_up", "elapsed_s"]


class RoundLog:
    """The rounds as they finish; logs one line per round."""

    def __init__(self, settings: FederatedSettings) -> None:
        self.settings = settings
        self.rows: list[dict[str, Any]] = []
        self.clients: list[dict[str, Any]] = []  # per round: partition-id -> figures
        self.t0 = time.perf_counter()

    def add(self, server_round: int, figures: dict[str, float],
            meter: dict[str, Any] | None) -> None:
        meter = meter or {}
        clients = meter.get("clients", {})
        accs = [c["accuracy"] for c in clients.values() if "accuracy" in c]
        losses = [(c["train_loss"], c["examples"]) for c in clients.values() if "train_loss" in c]
        row: dict[str, Any] = {
            "round": server_round, **figures,
            "clients_trained": meter.get("clients_trained", 0),
            "failures": meter.get("failures", 0),
            "client_accuracy_mean": sum(accs) / len(accs) if accs else None,
            "client_accuracy_min": min(accs) if accs else None,
            "client_accuracy_max": max(accs) if accs else None,
            "train_loss": (sum(v * n for v, n in losses) / sum(n for _, n in losses)
                           if losses else None),
            "bytes_down": meter.get("bytes_down", 0), "bytes_up": meter.get("bytes_up", 0),
            "elapsed_s": round(time.perf_counter() - self.t0, 2)}
        self.rows.append(row)
        self.clients.append({"round": server_round, "clients": {
            str(k): v for k, v in sorted(clients.items())},
            "failed_nodes": meter.get("failed_nodes", [])})
        if server_round:
            sent = (row["bytes_down"] + row["bytes_up"]) / 1e6
            log.info("round %d/%d: test accuracy %.2f %%, val %.2f %% (%d clients trained, %d "
                     "failed; %.1f MB of arrays sent) %.0f s", server_round,
                     self.settings.rounds, 100 * figures.get("test_accuracy", float("nan")),
                     100 * figures.get("val_accuracy", float("nan")), row["clients_trained"],
                     row["failures"], sent, row["elapsed_s"])

    def first_round_reaching(self, key: str, target: float) -> int | None:
        for row in self.rows:
            if row["round"] and (row.get(key) or 0) >= target:
                return int(row["round"])
        return None


def _text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def _rounds_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=ROUND_FIELDS, lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else f"{v:.6g}" if isinstance(v, float) else v)
                         for k, v in row.items()})
    return buf.getvalue()


def plot_rounds(rows: list[dict[str, Any]], path: Path, *, target: float) -> Path:
    """Accuracy of the global model (validation, test) and of the clients against rounds."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    r = [row["round"] for row in rows]
    for key, label in (("test_accuracy", "global model, test"),
                       ("val_accuracy", "global model, validation")):
        values = [float("nan") if row.get(key) is None else row[key] for row in rows]
        ax.plot(r, values, label=label, marker="." if len(r) < 40 else "")
    with_clients = [row for row in rows if row.get("client_accuracy_mean") is not None]
    if with_clients:
        cr = [row["round"] for row in with_clients]
        ax.plot(cr, [row["client_accuracy_mean"] for row in with_clients], lw=1, ls="--",
                label="clients' own data (mean, min-max)")
        ax.fill_between(cr, [row["client_accuracy_min"] for row in with_clients],
                        [row["client_accuracy_max"] for row in with_clients], alpha=0.2)
    ax.axhline(target, color="grey", lw=0.8, ls=":", label=f"target {target:.0%}")
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy")
    ax.set_ylim(max(0.0, min([row.get("test_accuracy") or 1 for row in rows] + [0.9]) - 0.02),
                1.0)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def write_run(s: FederatedSettings, cfg: Config, data: PreparedData, model: nn.Module,
              rounds: RoundLog, *, privacy: dict[str, Any] | None, seconds: float,
              stopped: str | None = None) -> dict[str, Any]:
    """Write the run directory; returns its metrics."""
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    last = rounds.rows[-1] if rounds.rows else {}
    best = max((row for row in rounds.rows if row["round"]),
               key=lambda row: row.get("val_accuracy") or 0, default={})
    metrics: dict[str, Any] = {
        "federated": True, "strategy": s.strategy, "partition": s.partition,
        "clients": s.clients, "clients_per_round": s.sampled_clients, "rounds": s.rounds,
        "rounds_run": int(last.get("round", 0)), "stopped_at_target": stopped == "target",
        "stopped_by_time_budget": stopped == "time budget",
        "local_epochs": s.local_epochs,
        **{k: round(last[k], 6) for k in ("val_loss", "val_accuracy", "test_loss",
                                          "test_accuracy") if last.get(k) is not None},
        "best_val_round": best.get("round"),
        "target_accuracy": s.target_accuracy,
        "rounds_to_target_test": rounds.first_round_reaching("test_accuracy", s.target_accuracy),
        "rounds_to_target_val": rounds.first_round_reaching("val_accuracy", s.target_accuracy),
        "bytes_sent": int(sum(row["bytes_down"] + row["bytes_up"] for row in rounds.rows)),
        "failures": int(sum(row["failures"] for row in rounds.rows)),
        "train_time_s": round(seconds, 1),
        "train_images": len(data.train),
        **({"val_images": len(data.val)} if data.val is not None else {}),
        **({"test_images": len(data.test)} if data.test is not None else {}),
        "privacy": privacy,
    }
    spec = model.input_spec
    assert isinstance(spec, InputSpec)
    save_checkpoint(out / "model.pt", checkpoint_payload(model, cfg, data, spec, metrics))
    _text(out / "config.toml", dump_toml(cfg.to_dict()))
    if data.manifest is not None:
        _text(out / MANIFEST_NAME, json.dumps(data.manifest) + "\n")
    _text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    _text(out / "rounds.csv", _rounds_csv(rounds.rows))
    _text(out / "federated.json", json.dumps({
        "settings": {k: v for k, v in s.to_dict().items() if k != "client_data"},
        "metrics": metrics, "rounds": rounds.rows, "clients": rounds.clients,
        "privacy": privacy}, indent=1) + "\n")
    plot_rounds(rounds.rows, out / "plots" / "federated_accuracy.png", target=s.target_accuracy)
    write_section(out, report_section(metrics))
    return metrics


def report_section(m: dict[str, Any]) -> Section:
    """The run's federated figures for its report and model card (``cnnlab evaluate`` and
    ``cnnlab report`` show it; stored in ``sections/federated.json``)."""
    reached = m["rounds_to_target_test"]
    rows = [("Strategy", f"{m['strategy']}, {m['clients']} clients ({m['partition']}), "
                         f"{m['clients_per_round']} per round, {m['local_epochs']} local "
                         "epoch(s)"),
            ("Rounds", f"{m['rounds_run']} of {m['rounds']}"),
            (f"Test accuracy {m['target_accuracy']:.0%} reached",
             f"in round {reached}" if reached else "no"),
            ("Arrays sent", f"{m['bytes_sent'] / 1e6:,.1f} MB"),
            ("Failed or missing client replies", str(m["failures"]))]
    if m.get("privacy"):
        p = m["privacy"]
        rows.append(("Differential privacy", f"({p['epsilon']:.3g}, {p['delta']:g}) at the "
                                             f"client level, {p['mode']}-side clipping "
                                             f"{p['clipping_norm']:g}, noise "
                                             f"{p['noise_multiplier']:g}"))
    markdown = "Trained with Flower (federated.json, rounds.csv).\n\n" + "\n".join(
        f"- {k}: {v}" for k, v in rows)
    body = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in rows)
    return Section(key="federated", title="Federated training", markdown=markdown,
                   html=f"<p>Trained with Flower (federated.json, rounds.csv).</p><ul>{body}</ul>",
                   card=rows, figures={"accuracy by round": "plots/federated_accuracy.png"})
