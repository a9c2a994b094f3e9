"""The Flower apps (message API): the ClientApp every client runs, and the ServerApp.

The same two apps run on Flower's simulation engine (``cnnlab federated simulate``: Ray
actors in this machine) and on its deployment engine (``cnnlab federated server`` /
``client``: a SuperLink and SuperNodes over gRPC). For the deployment engine Flower loads them
by name, ``cnnlab.federated.apps:server_app`` and ``:client_app``; a client then finds its
data file and partition id in its node config (``data-file``, ``partition-id``), the server
its settings file in the run config (``settings-file``).

A client is stateless: the server sends the global weights, the model record and the local
training options with every message.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.serverapp import Grid, ServerApp

from cnnlab.federated.task import build_model, evaluate, load_client_data, local_train

__all__ = ["client_app", "make_client_app", "make_server_app", "server_app"]

log = logging.getLogger("cnnlab")

CLIPPING_NORM_KEY = "clipping_norm"  # the key Flower's client-side DP wrapper sends


def _value(record: Any, key: str, default: Any = None) -> Any:
    """A record's value as Any: Flower types record values as a union of every kind."""
    return record.get(key, default) if default is not None else record[key]


def _client_threads() -> None:
    # one thread per client: the simulation runs one client per core
    threads = int(os.environ.get("CNNLAB_CLIENT_THREADS", "1"))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _data_file(context: Context, default: str | None) -> str:
    path = context.node_config.get("data-file", default)
    if not path:
        raise RuntimeError("this client has no data file: start it with `cnnlab federated "
                           "client`, which passes --node-config data-file=...")
    return str(path)


def _dp_clipping(msg: Message, ctxt: Context, call_next: Any) -> Message:
    """Flower's ``fixedclipping_mod`` when the server asks for client-side clipping (its DP
    wrapper sends the clipping norm); otherwise the message passes unchanged."""
    config = msg.content.config_records.get("config")
    if config is not None and CLIPPING_NORM_KEY in config:
        return fixedclipping_mod(msg, ctxt, call_next)
    reply: Message = call_next(msg, ctxt)
    return reply


def make_client_app(data_file: str | None = None) -> ClientApp:
    """The ClientApp; ``data_file`` is the simulation's one file for all clients (a deployed
    client names its own in its node config)."""
    app = ClientApp()

    @app.train(mods=[_dp_clipping])
    def train(msg: Message, context: Context) -> Message:
        _client_threads()
        config = msg.content.config_records["config"]
        pid = int(context.node_config["partition-id"])
        data = load_client_data(_data_file(context, data_file), pid)
        model = build_model(json.loads(str(_value(config, "model"))))
        model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
        seed = (int(_value(config, "seed")) * 1_000_003
                + int(_value(config, "server-round")) * 7_919 + pid)
        figures = local_train(
            model, data, epochs=int(_value(config, "local-epochs")),
            batch_size=int(_value(config, "batch-size")), lr=float(_value(config, "lr")),
            momentum=float(_value(config, "momentum")),
            proximal_mu=float(_value(config, "proximal-mu", 0.0)), seed=seed)
        # under DP every client weighs the same (the accountant's requirement); else its size
        weight = 1 if bool(_value(config, "uniform-weights", False)) else len(data)
        metrics = MetricRecord({**figures, "num-examples": len(data), "weight": weight,
                                "partition-id": pid})
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate_local(msg: Message, context: Context) -> Message:
        """The global model on the client's own data: the per-client accuracy of a round."""
        _client_threads()
        config = msg.content.config_records["config"]
        pid = int(context.node_config["partition-id"])
        data = load_client_data(_data_file(context, data_file), pid)
        model = build_model(json.loads(str(_value(config, "model"))))
        model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
        loss, accuracy = evaluate(model, data.images, data.targets, data.mean, data.std)
        metrics = MetricRecord({"loss": loss, "accuracy": accuracy, "num-examples": len(data),
                                "weight": len(data), "partition-id": pid})
        return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)

    return app


def make_server_app(settings_file: str | None = None) -> ServerApp:
    """The ServerApp: runs the strategy over the rounds, evaluates the global model on the
    server's validation and test splits after each, and writes the run directory.
    ``settings_file`` is the simulation's (a deployed server names it in the run config)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        from cnnlab.federated.server import run_server

        cnnlab_log = logging.getLogger("cnnlab")
        if not cnnlab_log.handlers:  # a deployed ServerApp's own process: its round lines
            cnnlab_log.addHandler(logging.StreamHandler())
            cnnlab_log.setLevel(logging.INFO)
        path = context.run_config.get("settings-file", settings_file)
        if not path:
            raise RuntimeError("the ServerApp needs its settings file: start it with "
                               "`cnnlab federated server`")
        run_server(grid, str(path))

    return app


# what Flower's deployment engine loads by name (pyproject's [tool.flwr.app.components])
client_app = make_client_app()
server_app = make_server_app()

