"""cnnlab federated simulate on Flower's simulation engine, on tiny MNIST: the run directory
(an ordinary checkpoint), the per-round figures, DP's privacy budget; and the bad inputs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from cli_helpers import error_line
from cnnlab.cli.main import main
from synth import make_png

TINY = ["--limit", "300", "--clients", "3", "--fraction", "1", "--rounds", "2",
        "--local-epochs", "1", "--batch-size", "30", "--model", "paper-cnn-tiny"]


def test_simulate_writes_a_run_that_loads_and_reports_its_privacy(mnist_dir: Path,
                                                                  tmp_path: Path) -> None:
    # a subprocess: Ray's own warnings are no errors there (pytest's filterwarnings = error)
    out = tmp_path / "fed"
    run = subprocess.run(
        [sys.executable, "-m", "cnnlab.cli.main", "federated", "simulate", *TINY,
         "--data-dir", str(mnist_dir.parent), "--dp", "server", "--noise-multiplier", "0.3",
         "--clipping-norm", "5", "--model-arg", "hidden=24", "--out", str(out), "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    m = json.loads(run.stdout)
    assert m["rounds_run"] == 2 and m["clients_per_round"] == 3 and m["failures"] == 0
    assert "round 2/2: test accuracy" in run.stderr

    rows = list(csv.DictReader((out / "rounds.csv").read_text().splitlines()))
    assert [r["round"] for r in rows] == ["0", "1", "2"]
    assert all(int(r["clients_trained"]) == 3 for r in rows[1:])
    # arrays sent: each round 3 train + 3 evaluate messages down, 3 replies up
    arrays = json.loads((out / "federated.json").read_text())
    clients = arrays["clients"][1]["clients"]
    assert sorted(clients) == ["0", "1", "2"]
    assert all(0 <= c["accuracy"] <= 1 for c in clients.values())
    assert sum(c["examples"] for c in clients.values()) == m["train_images"]
    assert (out / "plots" / "federated_accuracy.png").stat().st_size > 1000
    assert not (out / ".federated").exists()  # the client data file is removed
    section = json.loads((out / "sections" / "federated.json").read_text())  # for the report
    assert ["Rounds", "2 of 2"] in section["card"]

    import cnnlab

    model = cnnlab.load(str(out))
    assert model.classes == [str(k) for k in range(10)]
    assert model.predict([make_png()])[0].label in model.classes
    params = sum(p.numel() for p in model.classifier.parameters())
    from cnnlab.models import create_model

    assert params == sum(p.numel() for p in create_model("paper-cnn-tiny", hidden=24).parameters())
    assert params != sum(p.numel() for p in create_model("paper-cnn-tiny").parameters())
    assert int(rows[1]["bytes_up"]) == 3 * 4 * params  # float32 arrays of 3 clients

    # the budget is Flower's RDP accountant's for 2 releases at this noise
    with warnings.catch_warnings():  # Flower's CLI layer imports a deprecated click helper
        warnings.simplefilter("ignore", DeprecationWarning)
        from flwr.serverapp import (
            GaussianPrivacyEvent,
            NeighboringRelation,
            PrivacyConfig,
            RdpAccountant,
            SamplingMethod,
        )

    accountant = RdpAccountant(PrivacyConfig(1e-5, 3, NeighboringRelation.ADD_OR_REMOVE_ONE,
                                             SamplingMethod.NO_AMPLIFICATION))
    accountant.compose(GaussianPrivacyEvent(0.3, 3, 3), 2)
    assert m["privacy"]["releases"] == 2
    assert m["privacy"]["epsilon"] == pytest.approx(accountant.get_epsilon(1e-5))
    assert m["privacy"]["mode"] == "server" and m["privacy"]["delta"] == 1e-5


@pytest.mark.parametrize(("args", "message"), [
    (["--strategy", "fedavgg"], "error: unknown strategy 'fedavgg'; did you mean 'fedavg'?"),
    (["--partition", "dirichlett:0.5"], "did you mean 'dirichlet'?"),
    (["--dp", "servr"], "error: unknown dp mode 'servr'; did you mean 'server'?"),
    (["--fraction", "0"], "The '--fraction' option must be a finite number in (0, 1]"),
    (["--rounds", "0"], "The '--rounds' option must be an integer in [1, 100000]"),
    (["--lr", "nan"], "The '--lr' option must be a finite number"),
    (["--model", "lenet"], "did you mean 'lenet5'"),
    (["--model-arg", "hiden=5"], "unknown keyword argument 'hiden'; did you mean 'hidden'?"),
    (["--model-arg", "hidden"], "--model-arg takes KEY=VALUE with a plain key"),
    (["--model-arg", "model.hidden=5"], "--model-arg takes KEY=VALUE with a plain key"),
    (["--model-arg", "kernel_size=4"], "'kernel_size' parameter of model 'paper-cnn' must be"),
])
def test_bad_options_fail_before_anything_runs(args: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["federated", "simulate", *args, "--out", "fed"]) == 2
    assert message in error_line(capsys)


def test_more_clients_than_data_is_refused(mnist_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["federated", "simulate", "--data-dir", str(mnist_dir.parent), "--limit", "50",
                 "--clients", "60", "--out", str(tmp_path / "fed"), "-q"]) == 2
    assert "more clients (60) than training images (" in error_line(capsys)
