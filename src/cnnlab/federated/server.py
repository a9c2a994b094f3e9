"""The server side of a federated run: the strategy (Flower's FedAvg or FedProx, optionally in
Flower's fixed-clipping DP wrapper with its RDP accountant), a meter around it that records
each round's clients, failures and bytes, the global model's validation and test figures
after each round, and the run directory at the end.

A round never waits longer than ``round_timeout`` for replies: a client that disconnects or
fails mid-round is logged and the round aggregates the others (Flower's ``send_and_receive``
returns what came in time; failed replies are counted). With fewer clients connected than a
round samples, the sample shrinks to those there (``min_*_nodes`` = 1); DP's accountant needs
the full sample and ends the run with an error instead.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid, NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedProx,
    Strategy,
)

from cnnlab.federated.settings import FederatedSettings, load_run_data
from cnnlab.federated.task import evaluate
from cnnlab.training.loop import build_model, model_record

__all__ = ["Metered", "make_strategy", "run_server"]

log = logging.getLogger("cnnlab")


class FederatedRunError(RuntimeError):
    """The federated run could not go on (no clients, a DP budget exhausted, ...)."""


class _StopRounds(Exception):
    """Raised after a round's evaluation to end the run early (target reached, time up)."""


def make_strategy(s: FederatedSettings) -> tuple[Strategy, Any]:
    """The configured strategy, and the DP wrapper (None without DP) whose accountant holds the
    privacy budget."""
    common: dict[str, Any] = dict(
        fraction_train=s.fraction, fraction_evaluate=s.fraction, min_train_nodes=1,
        min_evaluate_nodes=1, min_available_nodes=1, weighted_by_key="weight")
    base: FedAvg = (FedProx(proximal_mu=s.proximal_mu, **common) if s.strategy == "fedprox"
                    else FedAvg(**common))
    if s.dp == "off":
        return base, None
    accountant = RdpAccountant(PrivacyConfig(
        target_delta=s.delta, population_size=s.clients,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION))
    wrapper_type = (DifferentialPrivacyServerSideFixedClipping if s.dp == "server"
                    else DifferentialPrivacyClientSideFixedClipping)
    dp = wrapper_type(base, s.noise_multiplier, s.clipping_norm, s.sampled_clients,
                      accountant=accountant)
    return dp, dp


def _array_bytes(arrays: ArrayRecord) -> int:
    return int(sum(a.numpy().nbytes for a in arrays.values()))


class Metered(Strategy):
    """A strategy around another that records, per round, the clients asked and answering,
    the failures, the bytes of arrays sent each way and each client's figures."""

    def __init__(self, inner: Strategy) -> None:
        super().__init__()
        self.inner = inner
        self.rounds: dict[int, dict[str, Any]] = {}

    def _round(self, server_round: int) -> dict[str, Any]:
        return self.rounds.setdefault(server_round, {
            "round": server_round, "clients_asked": 0, "clients_trained": 0, "failures": 0,
            "bytes_down": 0, "bytes_up": 0, "clients": {}, "failed_nodes": []})

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        r = self._round(server_round)
        r["clients_asked"] = len(messages)
        r["bytes_down"] += len(messages) * _array_bytes(arrays)
        r["started"] = time.perf_counter()
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        r = self._round(server_round)
        for msg in replies:
            if msg.has_error():
                r["failures"] += 1
                r["failed_nodes"].append(int(msg.metadata.src_node_id))
                log.warning("round %d: a client failed (node %d): %s; the round goes on with "
                            "the others", server_round, msg.metadata.src_node_id,
                            msg.error.reason)
                continue
            r["clients_trained"] += 1
            r["bytes_up"] += sum(_array_bytes(a) for a in msg.content.array_records.values())
            m: Any = msg.content.metric_records["metrics"]
            r["clients"].setdefault(int(m["partition-id"]), {}).update(
                train_loss=float(m["train_loss"]), train_accuracy=float(m["train_accuracy"]),
                examples=int(m["num-examples"]))
        missing = r["clients_asked"] - len(replies)
        if missing > 0:
            r["failures"] += missing
            log.warning("round %d: %d client(s) sent no reply within the round timeout "
                        "(disconnected?); the round goes on with the others", server_round,
                        missing)
        if r["clients_trained"] == 0:
            log.warning("round %d: no client replied; the global model stays as it was",
                        server_round)
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        messages = list(self.inner.configure_evaluate(server_round, arrays, config, grid))
        self._round(server_round)["bytes_down"] += len(messages) * _array_bytes(arrays)
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        replies = list(replies)
        r = self._round(server_round)
        for msg in replies:
            if msg.has_error():
                continue
            m: Any = msg.content.metric_records["metrics"]
            r["clients"].setdefault(int(m["partition-id"]), {}).update(
                accuracy=float(m["accuracy"]), examples=int(m["num-examples"]))
        return self.inner.aggregate_evaluate(server_round, replies)


def _wait_for_clients(grid: Grid, s: FederatedSettings) -> None:
    deadline = time.monotonic() + s.wait_clients
    said = -1
    while (count := len(list(grid.get_node_ids()))) < s.clients:
        if time.monotonic() > deadline:
            raise FederatedRunError(
                f"only {count} of {s.clients} clients connected within {s.wait_clients:g} s; "
                "start the missing ones (`cnnlab federated client`), or pass --clients "
                f"{max(count, 1)}")
        if count != said:
            log.info("waiting for clients: %d of %d connected", count, s.clients)
            said = count
        time.sleep(0.5)


def run_server(grid: Grid, settings_file: str) -> dict[str, Any]:
    """Run the federated rounds on ``grid`` and write the run directory; returns its figures.

    Raises:
        FederatedRunError: the clients did not connect in time.
    """
    from cnnlab.federated.results import RoundLog, write_run

    s = FederatedSettings.load(settings_file)
    cfg, data = load_run_data(s)
    torch.manual_seed(s.seed)
    model = build_model(cfg, data)
    record = model_record(cfg, data)
    scratch = copy.deepcopy(model).eval()
    rounds_log = RoundLog(s)

    def evaluate_global(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        """The global model on the server's validation (decides) and test (reports) splits."""
        scratch.load_state_dict(arrays.to_torch_state_dict())
        figures: dict[str, Any] = {}
        for split, ds in (("val", data.val), ("test", data.test)):
            if ds is not None:
                loss, acc = evaluate(scratch, ds.images, ds.targets, data.mean, data.std)
                figures[f"{split}_loss"], figures[f"{split}_accuracy"] = loss, acc
        rounds_log.add(server_round, figures, meter.rounds.get(server_round))
        latest["arrays"] = arrays
        if server_round and s.stop_at_target and figures.get("test_accuracy", 0.0) >= \
                s.target_accuracy:
            stopped["why"] = "target"
            raise _StopRounds
        if server_round and s.time_budget_s and time.perf_counter() - t0 > s.time_budget_s:
            stopped["why"] = "time budget"
            raise _StopRounds
        return MetricRecord(figures)

    _wait_for_clients(grid, s)
    strategy, dp = make_strategy(s)
    meter = Metered(strategy)
    train_config = ConfigRecord({
        "model": json.dumps(record), "local-epochs": s.local_epochs, "batch-size": s.batch_size,
        "lr": s.lr, "momentum": s.momentum, "seed": s.seed, "uniform-weights": s.dp != "off"})
    latest: dict[str, ArrayRecord] = {}
    stopped: dict[str, str] = {}
    t0 = time.perf_counter()
    try:
        result = meter.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                             num_rounds=s.rounds, timeout=s.round_timeout,
                             train_config=train_config,
                             evaluate_config=ConfigRecord({"model": json.dumps(record)}),
                             evaluate_fn=evaluate_global)
        final = result.arrays
    except _StopRounds:
        final = latest["arrays"]
        log.info("stopped after round %d: %s", rounds_log.rows[-1]["round"],
                 "the target accuracy is reached" if stopped["why"] == "target"
                 else "the time budget is spent")
    model.load_state_dict(final.to_torch_state_dict())
    privacy = None
    if dp is not None:
        spent = dp.privacy_spent()
        privacy = {"mode": s.dp, "noise_multiplier": s.noise_multiplier,
                   "clipping_norm": s.clipping_norm, "delta": spent.delta,
                   "epsilon": spent.epsilon, "releases": spent.num_releases,
                   "accounting": f"{spent.accounting_method} (Flower's RdpAccountant, "
                                 "client-level, no sampling amplification)"}
    return write_run(s, cfg, data, model, rounds_log, privacy=privacy,
                     seconds=time.perf_counter() - t0, stopped=stopped.get("why"))
