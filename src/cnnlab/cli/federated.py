"""``cnnlab federated simulate|server|client``: federated training on Flower."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cnnlab.cli._util import Formatter, Parser, SubParsers

if TYPE_CHECKING:
    from cnnlab.federated.settings import FederatedSettings

_D: dict[str, Any] = {}  # the settings' defaults, filled when the parser is built


def _data_options(p: argparse.ArgumentParser) -> None:
    """What defines the data and its partition: the server and every client must agree."""
    g = p.add_argument_group("data and partition (the server and every client must agree)")
    g.add_argument("--dataset", default=_D["dataset"],
                   help=f"registered dataset (default: {_D['dataset']})")
    g.add_argument("--data-dir", default=_D["data_dir"], metavar="DIR",
                   help="where the dataset files are (default: as for train)")
    g.add_argument("--limit", type=int, default=_D["limit"], metavar="N",
                   help="a stratified subset of N training images before partitioning "
                        "(default: 0, all)")
    g.add_argument("--val-fraction", type=float, default=_D["val_fraction"], metavar="F",
                   help="held out of the training split for the server's validation, which "
                        f"decides (default: {_D['val_fraction']:.4f}, 5,000 of MNIST's 60,000)")
    g.add_argument("--clients", type=int, default=_D["clients"], metavar="N",
                   help=f"number of clients (default: {_D['clients']})")
    g.add_argument("--partition", default=_D["partition"], metavar="KIND",
                   help="iid | shards:K (label-sorted shards, K per client; McMahan et al.'s "
                        "pathological non-IID is shards:2) | dirichlet:ALPHA (label shares per "
                        "client) | writer (whole NIST writers, MNIST's QMNIST labels) "
                        f"(default: {_D['partition']})")
    g.add_argument("--seed", type=int, default=_D["seed"],
                   help=f"seed of the split, the partition and training (default: {_D['seed']})")


def _training_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--model", default=_D["model"],
                   help=f"model (default: {_D['model']}; see `cnnlab models`)")
    g.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   dest="model_args",
                   help="a model hyperparameter (repeatable), as train's --set model.KEY=VALUE: "
                        "--model-arg kernel_size=5 --model-arg hidden=512 is McMahan et al.'s "
                        "CNN")
    g.add_argument("--rounds", type=int, default=_D["rounds"],
                   help=f"federated rounds (default: {_D['rounds']})")
    g.add_argument("--strategy", default=_D["strategy"],
                   help=f"fedavg | fedprox (default: {_D['strategy']})")
    g.add_argument("--proximal-mu", type=float, default=_D["proximal_mu"], metavar="MU",
                   help=f"FedProx's proximal weight (default: {_D['proximal_mu']})")
    g.add_argument("--fraction", type=float, default=_D["fraction"], metavar="C",
                   help=f"fraction of the clients trained each round (default: {_D['fraction']})")
    g.add_argument("--local-epochs", type=int, default=_D["local_epochs"], metavar="E",
                   help=f"local epochs per round (default: {_D['local_epochs']})")
    g.add_argument("--batch-size", type=int, default=_D["batch_size"], metavar="B",
                   help=f"local batch size (default: {_D['batch_size']})")
    g.add_argument("--lr", type=float, default=_D["lr"],
                   help=f"local SGD learning rate (default: {_D['lr']})")
    g.add_argument("--momentum", type=float, default=_D["momentum"],
                   help=f"local SGD momentum (default: {_D['momentum']})")
    g.add_argument("--target", type=float, default=_D["target_accuracy"], metavar="ACC",
                   help="the test accuracy whose first round is reported "
                        f"(default: {_D['target_accuracy']})")
    g.add_argument("--stop-at-target", action="store_true",
                   help="end the run at the first round that reaches --target (default: off)")
    g.add_argument("--round-timeout", type=float, default=_D["round_timeout"], metavar="S",
                   help="seconds a round waits for replies before it aggregates those that "
                        f"came (default: {_D['round_timeout']:g})")
    d = p.add_argument_group("differential privacy (Flower's fixed-clipping DP wrappers)")
    d.add_argument("--dp", default=_D["dp"], metavar="MODE",
                   help="off | server (updates clipped on the server) | client (clipped on each "
                        f"client, Flower's fixedclipping_mod) (default: {_D['dp']})")
    d.add_argument("--noise-multiplier", type=float, default=_D["noise_multiplier"],
                   metavar="Z", help=f"Gaussian noise / clipping norm (default: "
                                     f"{_D['noise_multiplier']})")
    d.add_argument("--clipping-norm", type=float, default=_D["clipping_norm"], metavar="S",
                   help=f"L2 bound of each client's update (default: {_D['clipping_norm']})")
    d.add_argument("--delta", type=float, default=_D["delta"],
                   help=f"the delta of the reported (epsilon, delta) (default: {_D['delta']:g})")


def _run_options(p: argparse.ArgumentParser, *, default_out: str) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--out", default=default_out, metavar="DIR",
                   help=f"run directory (default: {default_out})")
    g.add_argument("--overwrite", action="store_true",
                   help="replace a run already in --out (default: refuse)")
    g.add_argument("--verbose", action="store_true", help="show Flower's own log")
    g.add_argument("--json", action="store_true", help="print the final metrics as one JSON object")


def add_parser(sub: SubParsers, common: Parser, formatter: Formatter) -> None:
    from dataclasses import asdict

    from cnnlab.federated.settings import FederatedSettings

    _D.update(asdict(FederatedSettings()))
    p = sub.add_parser(
        "federated", formatter_class=formatter, help="federated training on Flower",
        description="Train one model across clients that keep their data, on Flower: "
                    "`simulate` on its simulation engine (Ray, this machine), `server` and "
                    "`client` on its deployment engine (a SuperLink and SuperNodes). The run "
                    "directory holds the final global model as model.pt, which evaluate, "
                    "predict and serve accept, with rounds.csv, federated.json and a plot.")
    actions = p.add_subparsers(dest="federated_action", metavar="ACTION", required=True)
    sim = actions.add_parser(
        "simulate", parents=[common], formatter_class=formatter,
        help="simulate N clients on this machine (Flower's simulation engine)",
        epilog="Example:\n  cnnlab federated simulate --clients 100 --partition shards:2 "
               "--rounds 200 --out runs/fed-shards")
    _data_options(sim)
    _training_options(sim)
    _run_options(sim, default_out="runs/federated")
    sim.add_argument("--workers", type=int, default=0, metavar="N",
                     help="clients training at the same time (default: 0, one per core)")
    sim.set_defaults(run=run_simulate)

    server = actions.add_parser(
        "server", parents=[common], formatter_class=formatter,
        help="run the rounds on clients that connect (a Flower SuperLink)",
        epilog="Example, three terminals:\n"
               "  cnnlab federated server --clients 2 --rounds 3 --out runs/fed-server\n"
               "  cnnlab federated client --clients 2 --partition-id 0\n"
               "  cnnlab federated client --clients 2 --partition-id 1")
    _data_options(server)
    _training_options(server)
    _run_options(server, default_out="runs/federated-server")
    server.add_argument("--host", default="127.0.0.1",
                        help="address the SuperLink listens on (default: 127.0.0.1, loopback; "
                             "0.0.0.0 for other machines, on a trusted network: no TLS)")
    server.add_argument("--port", type=int, default=9092,
                        help="the SuperLink's port (default: 9092)")
    server.add_argument("--wait-clients", type=float, default=_D["wait_clients"], metavar="S",
                        help="seconds to wait for all clients to connect "
                             f"(default: {_D['wait_clients']:g})")
    server.set_defaults(run=run_server)

    client = actions.add_parser(
        "client", parents=[common], formatter_class=formatter,
        help="train on this client's part of the data (a Flower SuperNode)")
    _data_options(client)
    client.add_argument("--partition-id", type=int, required=True, metavar="I",
                        help="this client's part, 0 to --clients - 1")
    client.add_argument("--superlink", default="127.0.0.1:9092", metavar="HOST:PORT",
                        help="the server's SuperLink (default: 127.0.0.1:9092)")
    client.add_argument("--port", type=int, default=None,
                        help="this SuperNode's local ClientApp port (default: 9100 + "
                             "partition id)")
    client.add_argument("--out", default=None, metavar="DIR",
                        help="where the client keeps its data file (default: "
                             "runs/federated-client-I)")
    client.add_argument("--max-wait", type=float, default=300.0, metavar="S",
                        help="stop after S seconds without reaching the SuperLink (default: 300)")
    client.set_defaults(run=run_client)


def _settings(args: argparse.Namespace, **extra: Any) -> FederatedSettings:
    from cnnlab.federated.settings import FederatedSettings

    return FederatedSettings(
        out=getattr(args, "out", None) or "runs/federated", dataset=args.dataset,
        data_dir=args.data_dir, limit=args.limit, val_fraction=args.val_fraction,
        clients=args.clients, partition=args.partition, seed=args.seed, **extra).check()


def _train_settings(args: argparse.Namespace) -> dict[str, Any]:
    return dict(model=args.model, model_kwargs=_model_kwargs(args.model_args),
                rounds=args.rounds, strategy=args.strategy,
                proximal_mu=args.proximal_mu, fraction=args.fraction,
                local_epochs=args.local_epochs, batch_size=args.batch_size, lr=args.lr,
                momentum=args.momentum, target_accuracy=args.target,
                stop_at_target=args.stop_at_target, round_timeout=args.round_timeout,
                dp=args.dp, noise_multiplier=args.noise_multiplier,
                clipping_norm=args.clipping_norm, delta=args.delta)


def _model_kwargs(items: list[str]) -> dict[str, Any]:
    """``["kernel_size=5"]`` -> ``{"kernel_size": 5}``; values parse as TOML, as --set's do."""
    from cnnlab.config import parse_set
    from cnnlab.errors import ConfigError

    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip() or "." in key:
            raise ConfigError(f"--model-arg takes KEY=VALUE with a plain key, such as "
                              f"kernel_size=5; got {item!r}")
    return parse_set(items)


def _check_model(s: FederatedSettings) -> None:
    from cnnlab.training.loop import check_model_settings

    check_model_settings(s.config())


def _report(args: argparse.Namespace, m: dict[str, Any]) -> int:
    from cnnlab.cli._util import print_json

    if args.json:
        print_json({"run_dir": args.out, **m})
        return 0
    reached = m["rounds_to_target_test"]
    lines = [f"federated {m['strategy']} on {m['clients']} clients ({m['partition']}), "
             f"{m['clients_per_round']} per round, {m['rounds_run']} round(s) in "
             f"{m['train_time_s']:.0f} s",
             f"  test accuracy   {m.get('test_accuracy', float('nan')):.2%}   validation "
             f"{m.get('val_accuracy', float('nan')):.2%} (best round by validation: "
             f"{m['best_val_round']})",
             f"  target {m['target_accuracy']:.0%}: " + (f"reached in round {reached}"
                                                         if reached else "not reached"),
             f"  sent {m['bytes_sent'] / 1e6:,.1f} MB of arrays; {m['failures']} failed or "
             "missing client replies"]
    if m.get("privacy"):
        p = m["privacy"]
        lines.append(f"  privacy: ({p['epsilon']:.3g}, {p['delta']:g})-DP at the client level "
                     f"after {p['releases']} rounds (noise {p['noise_multiplier']:g}, clip "
                     f"{p['clipping_norm']:g}, {p['mode']}-side clipping)")
    lines += [f"run directory: {args.out}/",
              "  model.pt        the final global model",
              "  rounds.csv      per round: global accuracy, client accuracies, bytes sent",
              "  federated.json  settings, every round and client, privacy budget",
              "  plots/federated_accuracy.png",
              f"next: cnnlab evaluate {args.out}   |   cnnlab predict {args.out} IMAGE.png"]
    print("\n".join(lines))
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    from cnnlab.errors import ConfigError
    from cnnlab.federated.simulate import simulate

    s = _settings(args, **_train_settings(args))
    _check_model(s)
    if args.workers < 0 or args.workers > 1024:
        raise ConfigError(f"--workers must be an integer in [0, 1024]; got {args.workers}")
    m = simulate(s, workers=args.workers or None, overwrite=args.overwrite,
                 progress=not args.quiet, verbose=args.verbose)
    return _report(args, m)


def run_server(args: argparse.Namespace) -> int:
    from cnnlab.federated.deploy import run_server as serve

    s = _settings(args, wait_clients=args.wait_clients, **_train_settings(args))
    _check_model(s)
    m = serve(s, host=args.host, port=args.port, overwrite=args.overwrite,
              verbose=args.verbose)
    return _report(args, m)


def run_client(args: argparse.Namespace) -> int:
    import math
    from pathlib import Path

    from cnnlab.errors import ConfigError
    from cnnlab.federated.deploy import run_client as connect

    if not (math.isfinite(args.max_wait) and args.max_wait > 0):
        raise ConfigError(f"--max-wait must be a finite number of seconds > 0; got "
                          f"{args.max_wait}")
    s = _settings(args)
    port = args.port if args.port is not None else 9100 + args.partition_id
    work = Path(args.out or f"runs/federated-client-{args.partition_id}")
    return connect(s, args.partition_id, superlink=args.superlink, port=port, work=work,
                   max_wait_s=args.max_wait)
