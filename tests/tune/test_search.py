"""Studies end to end on tiny synthetic data: grid, random, TPE, pruning, resume, workers."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cnnlab
from cnnlab.config import load_config_file, resolve_config
from cnnlab.errors import ConfigError, DataError
from cnnlab.training.loop import fit
from cnnlab.tune.results import finish
from cnnlab.tune.search import TuneSettings, _point_key, check_settings, grid_order, run_study
from cnnlab.tune.space import space_from_dict
from synth import write_image_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tune-data")
    write_image_folder(root / "train", n_per_class=16, num_classes=3, size=12)
    write_image_folder(root / "test", n_per_class=4, num_classes=3, size=12, seed=1)
    return root


def _base(folder: Path, **train: object) -> dict:
    return {"model": {"name": "convnet", "width": 4},
            "data": {"dataset": str(folder),
                     "image_size": 12, "val_fraction": 0.25},
            "train": {"epochs": 2, "batch_size": 16, "threads": 1, **train}}


def _settings(folder: Path, out: Path, params: dict, **kw: object) -> TuneSettings:
    space = space_from_dict(kw.pop("space_name", "tiny"), {  # type: ignore[arg-type]
        "params": params, **({"objectives": kw.pop("objectives")} if "objectives" in kw else {})})
    base = resolve_config(_base(folder, **kw.pop("train", {})))  # type: ignore[arg-type]
    return TuneSettings(base=base, space=space, out=out, progress=False, heartbeat_s=1.0,
                        **kw)  # type: ignore[arg-type]


def _points(study) -> list[str]:  # type: ignore[no-untyped-def]
    return [_point_key(t.params) for t in study.get_trials() if t.state.name != "FAIL"]


def test_grid_study_visits_every_point_once_and_reports(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid"
    settings = _settings(folder, out, {"optim.lr": [0.003, 0.01, 0.03], "model.depth": [4, 5]},
                         pruner="none")
    study = run_study(settings)
    points = _points(study)
    assert len(points) == 6 and len(set(points)) == 6
    assert all(t.state.name == "COMPLETE" for t in study.get_trials())
    # per-epoch values were reported for pruning
    assert all(sorted(t.intermediate_values) == [1, 2] for t in study.get_trials())
    summary = finish(study, settings)
    best = summary["best"]
    assert best["val_accuracy"] == pytest.approx(max(t.value for t in study.get_trials()),
                                                 abs=1e-6)
    assert 0 <= best["test_accuracy"] <= 1 and best["test_images"] == 12
    assert best["test_model"].startswith("trials/")
    for name in ("trials.csv", "best.toml", "report.html", "report.md", "tune.json",
                 "plots/history.png", "plots/importances.png", "plots/parallel.png"):
        assert (out / name).is_file(), name
    assert len((out / "trials.csv").read_text().splitlines()) == 7
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Trials (best first)" in html
    # best.toml is a config file that trains the best trial again, to the same accuracy
    cfg = resolve_config(load_config_file(out / "best.toml"))
    assert cfg.optim.lr == best["params"]["optim.lr"]
    assert cfg.model.kwargs["depth"] == best["params"]["model.depth"]
    again = fit(cfg, progress=False)
    assert again.metrics["val_accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)


def test_rerun_continues_the_study(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "resume"
    params = {"optim.lr": [0.003, 0.01], "model.depth": [4, 5]}
    first = run_study(_settings(folder, out, params, pruner="none", trials=2))
    assert len(first.get_trials()) == 2
    study = run_study(_settings(folder, out, params, pruner="none"))
    points = _points(study)
    assert len(points) == 4 and len(set(points)) == 4
    # a finished study stays finished: a third run adds nothing
    assert len(run_study(_settings(folder, out, params, pruner="none")).get_trials()) == 4
    # other settings on the same study are refused
    with pytest.raises(ConfigError, match="was started with other settings"):
        run_study(_settings(folder, out, {"optim.lr": [0.1]}, pruner="none"))


def test_successive_halving_prunes_a_diverging_trial(folder: Path, tmp_path: Path) -> None:
    params = {"optim.lr": [0.003, 0.005, 0.01, 50.0]}
    settings = _settings(folder, tmp_path / "prune", params, train={"epochs": 4})
    order = [p["optim.lr"] for p in grid_order(settings.space, settings.seed)]
    assert order[0] != 50.0  # the first trial of a rung is always promoted
    study = run_study(settings)
    by_lr = {t.params["optim.lr"]: t for t in study.get_trials()}
    bad = by_lr[50.0]
    assert bad.state.name == "PRUNED" and bad.user_attrs["epochs_run"] < 4
    assert sorted(bad.intermediate_values) == list(range(1, bad.user_attrs["epochs_run"] + 1))


def test_random_and_tpe_samplers_search_ranges(folder: Path, tmp_path: Path) -> None:
    params = {"optim.lr": {"low": 1e-3, "high": 3e-2, "log": True}, "model.depth": {
        "low": 4, "high": 6}}
    for sampler in ("random", "tpe"):
        settings = _settings(folder, tmp_path / sampler, params, sampler=sampler, trials=3)
        study = run_study(settings)
        finished = [t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]
        assert len(finished) == 3
        for t in finished:
            assert 1e-3 <= t.params["optim.lr"] <= 3e-2 and t.params["model.depth"] in (4, 5, 6)
        assert finish(study, settings)["sampler"] == sampler
        assert not settings.lock_path.exists()  # only the grid sampler takes a lock


def test_multi_objective_search_writes_the_pareto_front(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "nas"
    settings = _settings(folder, out, {"model.depth": [4, 6], "model.residual": [False, True],
                                       "model.width": [2, 4]},
                         objectives=["val_accuracy", "params"], sampler="tpe", trials=5)
    assert settings.pruner_name == "none"
    study = run_study(settings)
    summary = finish(study, settings)
    front = summary["pareto"]
    assert front and (out / "pareto.csv").is_file() and (out / "plots" / "pareto.png").is_file()
    done = [(t.values[0], t.values[1]) for t in study.get_trials() if t.state.name == "COMPLETE"]
    for row in front:  # nothing dominates a front member
        acc, params = row["val_accuracy"], row["params"]
        assert not any(a >= acc and p <= params and (a, p) != (acc, params) for a, p in done)
        assert row["parameters"] == params
    # the latency objective is measured
    settings = _settings(folder, tmp_path / "lat", {"model.depth": [4, 5]},
                         objectives=["val_accuracy", "latency_ms"], sampler="grid")
    trials = run_study(settings).get_trials()
    assert all(t.values[1] > 0 and t.user_attrs["latency_ms"] == t.values[1] for t in trials)


def test_budget_stops_the_study_early(folder: Path, tmp_path: Path) -> None:
    lrs = [round(0.001 * (i + 1), 4) for i in range(16)]
    settings = _settings(folder, tmp_path / "budget", {"optim.lr": lrs},
                         budget_minutes=0.05, pruner="none", train={"epochs": 100})
    study = run_study(settings)  # a trial takes about 0.6 s: the 3 s budget stops the 16 early
    assert 1 <= len(study.get_trials()) < len(lrs)


def test_invalid_settings(folder: Path, tmp_path: Path) -> None:
    params = {"model.depth": [4, 5]}
    two = ["val_accuracy", "params"]
    with pytest.raises(ConfigError, match="pruning compares one objective"):
        check_settings(_settings(folder, tmp_path, params, objectives=two, pruner="sha"))
    with pytest.raises(ConfigError, match="needs a validation split"):
        s = _settings(folder, tmp_path, params)
        base = dataclasses.replace(s.base, data=dataclasses.replace(s.base.data, val_fraction=0))
        check_settings(dataclasses.replace(s, base=base))
    with pytest.raises(ConfigError, match="The 'workers' setting of tune must be >= 1"):
        check_settings(_settings(folder, tmp_path, params, workers=0))
    with pytest.raises(ConfigError, match="grid sampler needs the points"):
        check_settings(_settings(folder, tmp_path, {"optim.lr": {"low": 0.1, "high": 0.2}},
                                 sampler="grid"))


def test_two_workers_share_a_grid_without_duplicates(folder: Path, tmp_path: Path) -> None:
    settings = _settings(folder, tmp_path / "workers", {
        "optim.lr": [0.002, 0.004, 0.006, 0.008], "model.depth": [4, 5]}, pruner="none",
        workers=2)
    study = run_study(settings)
    trials = study.get_trials()
    points = [_point_key(t.params) for t in trials]
    assert len(points) == 8 and len(set(points)) == 8
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.system_attrs.get("fixed_params") is not None for t in trials}) == 1


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from cnnlab.cli.main import entry; entry()", *args]


def test_a_study_killed_mid_trial_resumes(folder: Path, tmp_path: Path) -> None:
    big = tmp_path / "big"
    write_image_folder(big / "train", n_per_class=100, num_classes=3, size=28)
    out = tmp_path / "killed"
    space = tmp_path / "space.toml"
    space.write_text("[params]\noptim.lr = [0.002, 0.004]\n")
    cmd = _cli("tune", "--space", str(space), "--dataset", str(big / "train"), "--out", str(out),
               "--pruner", "none", "--heartbeat", "1", "--set", "train.epochs=25",
               "--set", "data.val_fraction=0.2", "--set", "model.width=8", "--threads", "1", "-q")
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    db = out / "study.db"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # wait until the first trial has reported an epoch
            if db.exists():
                try:
                    with sqlite3.connect(db, timeout=5) as con:
                        n = con.execute("select count(*) from trial_intermediate_values")
                        if n.fetchone()[0] > 0:
                            break
                except sqlite3.OperationalError:
                    pass  # tables not created yet
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        else:
            pytest.fail("the study never started a trial")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    with sqlite3.connect(db) as con:
        states = [r[0] for r in con.execute("select state from trials")]
    assert states == ["RUNNING"]  # killed mid-trial: nobody told the storage
    done = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["states"] == {"fail": 1, "complete": 2}
    # no test/ folder: a seeded test split is held out of it, and reported for the best only
    assert summary["finished"] == 2 and "test_accuracy" in summary["best"]


@pytest.mark.parametrize("pruner", ["hyperband", "median"])
def test_other_pruners_run(folder: Path, tmp_path: Path, pruner: str) -> None:
    settings = _settings(folder, tmp_path / pruner, {"optim.lr": [0.003, 0.01]}, pruner=pruner,
                         train={"epochs": 3})
    study = run_study(settings)
    assert type(study.pruner).__name__.lower().startswith(pruner)
    trials = study.get_trials()
    assert len(trials) == 2 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert all(len(t.intermediate_values) == t.user_attrs["epochs_run"] for t in trials)


def test_data_is_checked_before_the_first_trial(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "missing", tmp_path / "nodata", {"optim.lr": [0.01, 0.1]})
    with pytest.raises(DataError, match=r"missing. is neither a registered dataset .* nor an "
                                        "image folder"):
        run_study(settings)
    assert not (tmp_path / "nodata" / "study.db").exists()  # no study, so nothing to refuse


def test_a_study_without_a_finished_trial_starts_again_with_new_settings(
        folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "failed"
    failed = run_study(_settings(folder, out, {"optim.lr": [-1.0, -2.0]}, pruner="none"))
    trials = failed.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert all("'optim.lr' setting must be a positive number" in t.user_attrs["error"]
               for t in trials)
    assert finish(failed, _settings(folder, out, {"optim.lr": [-1.0, -2.0]}, pruner="none"))[
        "finished"] == 0
    study = run_study(_settings(folder, out, {"optim.lr": [0.003, 0.01]}, pruner="none"))
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert sorted(t.params["optim.lr"] for t in trials) == [0.003, 0.01]
    # once a trial has finished, other settings are refused again
    with pytest.raises(ConfigError, match="was started with other settings"):
        run_study(_settings(folder, out, {"optim.lr": [-1.0]}, pruner="none"))


def test_an_interrupted_trial_is_run_again(folder: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import cnnlab.training.loop as loop

    real_fit = loop.fit

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    settings = _settings(folder, tmp_path / "ctrl-c", {"optim.lr": [0.003, 0.01]},
                         pruner="none")
    monkeypatch.setattr(loop, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_study(settings)
    monkeypatch.setattr(loop, "fit", real_fit)
    study = run_study(settings)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[1].params == trials[0].params  # the interrupted grid point, queued again
    assert len(set(_points(study))) == 2


def test_no_private_optuna_attributes_in_src() -> None:
    private = re.compile(r"\b(?:study|trial|frozen|storage|sampler|pruner|optuna(?:\.\w+)*)"
                         r"\._[a-z]|\._(?:storage|study_id|trial_id|stop_flag|thread_local)\b")
    hits = [f"{path}:{number}: {line.strip()}"
            for path in Path(cnnlab.__file__).parent.rglob("*.py")
            for number, line in enumerate(path.read_text().splitlines(), start=1)
            if private.search(line)]
    assert not hits, "\n".join(hits)
