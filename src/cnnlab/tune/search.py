"""Hyperparameter and architecture search on Optuna: grid, random and TPE samplers, pruning.

A study lives in an Optuna storage (SQLite by default, ``<out>/study.db``), so rerunning the
same command continues it, and several worker processes can share it:

- Trials are claimed under a file lock next to the storage, so no two workers ever evaluate
  the same grid point (Optuna's own grid sampler can hand one point to two processes).
- Every running trial records a heartbeat; a trial whose worker died (killed, power loss) is
  marked failed once its heartbeat is older than the grace period, and its grid point is
  evaluated again.
- The objective is the validation accuracy of a trial's best epoch, reported after every
  epoch so that weak trials are pruned (successive halving by default). The test split is
  held back from every trial and used once, for the best configuration, in :func:`finish`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.config import Config, resolve_config
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.progress import Progress
from cnnlab.tune.space import OBJECTIVES, Param, SearchSpace, nest

__all__ = ["PRUNERS", "SAMPLERS", "TuneSettings", "check_space", "run_study", "trial_config"]

log = logging.getLogger(__name__)

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("sha", "hyperband", "median", "none")


@dataclass(frozen=True)
class TuneSettings:
    """Everything a study needs; picklable, so worker processes get a copy."""

    base: Config  # the settings every trial starts from (space [base] < -c < --set < flags)
    space: SearchSpace
    out: Path
    sampler: str = "auto"  # grid | random | tpe | auto (grid when every parameter has values)
    pruner: str = "auto"  # sha | hyperband | median | none | auto (sha; none for 2 objectives)
    trials: int | None = None  # finished trials the study should reach (grid: its size)
    budget_minutes: float | None = None  # start no new trial after this long
    storage: str | None = None  # an Optuna RDB URL (default sqlite:///<out>/study.db)
    study: str | None = None  # default: the name of --out
    workers: int = 1
    seed: int = 0
    heartbeat_s: float = 10.0  # a dead worker's trial is retried after 3 heartbeats
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sampler_name(self) -> str:
        if self.sampler != "auto":
            return self.sampler
        grid_ok = all(p.values is not None for p in self.space.params)
        return "grid" if grid_ok and not self.space.multi_objective else "tpe"

    @property
    def pruner_name(self) -> str:
        if self.pruner != "auto":
            return self.pruner
        return "none" if self.space.multi_objective else "sha"

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.out / 'study.db'}"

    @property
    def study_name(self) -> str:
        return self.study or self.out.resolve().name

    @property
    def lock_path(self) -> Path:
        url = self.storage_url
        if url.startswith("sqlite:///"):
            return Path(url[len("sqlite:///"):] + ".lock")
        return self.out / "study.lock"

    def target_trials(self) -> int:
        if self.sampler_name == "grid":
            size = len(self.space.grid())
            return min(self.trials, size) if self.trials else size
        return self.trials or 50

    def signature(self) -> dict[str, Any]:
        """What must not change between runs of one study."""
        return {"space": [dataclasses.asdict(p) for p in self.space.params],
                "objectives": list(self.space.objectives), "base": self.base.to_dict(),
                "sampler": self.sampler_name, "pruner": self.pruner_name, "seed": self.seed}


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as e:  # pragma: no cover - the tune extra is part of the install
        raise ConfigError(
            "cnnlab tune needs Optuna; install it with `pip install 'cnnlab[tune]'`") from e
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# --- configs ----------------------------------------------------------------------------------

def trial_config(base: Config, params: dict[str, Any]) -> Config:
    """``base`` with the trial's dotted-key ``params`` applied.

    Raises:
        ConfigError: an unknown key or a value out of range.
    """
    return resolve_config(base.to_dict(), nest(params))


def check_space(space: SearchSpace, base: Config, channels: int = 1,
                size: tuple[int, int] = (28, 28), num_classes: int = 10) -> None:
    """Fail early, with the parameter named, if any choice or bound is not a valid setting.

    Every value of a parameter is applied on its own to ``base`` and validated; model keys are
    checked by building the model (the other parameters at their first value, or the base's).

    Raises:
        ConfigError: an unknown key, a value out of range, a model that cannot be built.
    """
    from cnnlab.models import create_model

    first = {p.key: p.extremes()[0] for p in space.params}
    for p in space.params:
        for value in p.extremes():
            point = {**first, p.key: _cast(p, value)}
            try:
                cfg = trial_config(base, point)
                if p.key.startswith("model.") or p.key == "model":
                    create_model(cfg.model.name, in_channels=channels, num_classes=num_classes,
                                 input_size=size, **cfg.model.kwargs)
            except CnnlabError as e:
                raise ConfigError(
                    f"search space {space.name!r}: {p.key} = {value!r} is not a valid setting "
                    f"for this study: {e}") from e


def _cast(p: Param, value: Any) -> Any:
    return int(value) if p.is_int and isinstance(value, float) else value


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """Ask the trial for a value of every parameter (enqueued trials return theirs)."""
    params: dict[str, Any] = {}
    for p in space.params:
        if not p.is_range:
            params[p.key] = trial.suggest_categorical(p.key, list(p.values))  # type: ignore[arg-type]
        elif p.is_int:
            params[p.key] = trial.suggest_int(p.key, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            params[p.key] = trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
    return params


# --- study plumbing ---------------------------------------------------------------------------

def open_storage(settings: TuneSettings) -> Any:
    optuna = _optuna()
    url = settings.storage_url
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeat_interval is marked experimental
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=max(1, round(settings.heartbeat_s)),
                grace_period=max(2, round(3 * settings.heartbeat_s)),
                engine_kwargs=({"connect_args": {"timeout": 120}} if url.startswith("sqlite")
                               else None),
            )
    except Exception as e:  # SQLAlchemy raises many kinds for a bad URL or an unreachable DB
        raise ConfigError(f"cannot open the study storage {url!r}: {e}") from e


def _sampler(settings: TuneSettings, salt: int) -> Any:
    optuna = _optuna()
    seed = (settings.seed * 1_000_003 + salt) % 2**32
    name = settings.sampler_name
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # multivariate and constant_liar are "experimental"
            return optuna.samplers.TPESampler(seed=seed, multivariate=True,
                                              constant_liar=settings.workers > 1)
    return optuna.samplers.RandomSampler(seed=seed)  # grid trials are enqueued, never sampled


def _pruner(settings: TuneSettings) -> Any:
    optuna = _optuna()
    name = settings.pruner_name
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        max_epochs = max(_max_epochs(settings), 1)
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs,
                                              reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def _max_epochs(settings: TuneSettings) -> int:
    for p in settings.space.params:
        if p.key == "train.epochs":
            return int(max(p.extremes()))
    return settings.base.train.epochs


def create_or_load_study(settings: TuneSettings, *, salt: int = 0) -> Any:
    """Create the study, or load it and check it was started with the same settings.

    Raises:
        ConfigError: the study exists with other settings, or the storage cannot be opened.
    """
    optuna = _optuna()
    check_settings(settings)
    storage = open_storage(settings)
    directions = [OBJECTIVES[o][0] for o in settings.space.objectives]
    study = optuna.create_study(
        storage=storage, study_name=settings.study_name, directions=directions,
        sampler=_sampler(settings, salt), pruner=_pruner(settings), load_if_exists=True)
    signature = json.loads(json.dumps(settings.signature()))
    saved = study.user_attrs.get("cnnlab")
    if saved is None:
        study.set_user_attr("cnnlab", signature)
    elif saved != signature:
        changed = sorted(k for k in signature if saved.get(k) != signature[k])
        raise ConfigError(
            f"study {settings.study_name!r} in {settings.storage_url} was started with other "
            f"settings ({', '.join(changed)} differ); rerun it with the same command to "
            "continue it, or pass another --study or --out for a new study"
        )
    return study


def check_settings(settings: TuneSettings) -> None:
    """Raises ConfigError for settings that cannot work together."""
    if settings.sampler not in (*SAMPLERS, "auto"):
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}; "
                          f"got {settings.sampler!r}")
    if settings.pruner not in (*PRUNERS, "auto"):
        raise ConfigError(f"--pruner must be one of {', '.join(PRUNERS)}; got {settings.pruner!r}")
    if settings.space.multi_objective and settings.pruner_name != "none":
        raise ConfigError(
            f"pruning compares one objective, but space {settings.space.name!r} has two "
            f"({', '.join(settings.space.objectives)}); drop --pruner (or pass --pruner none)")
    if settings.sampler_name == "grid":
        settings.space.grid()
    if settings.trials is not None and settings.trials < 1:
        raise ConfigError(f"--trials must be >= 1; got {settings.trials}")
    if not settings.heartbeat_s > 0:
        raise ConfigError(f"--heartbeat must be > 0 seconds; got {settings.heartbeat_s}")
    if settings.workers < 1:
        raise ConfigError(f"--workers must be >= 1; got {settings.workers}")
    if settings.budget_minutes is not None and not settings.budget_minutes > 0:
        raise ConfigError(f"--budget-minutes must be > 0; got {settings.budget_minutes}")
    if settings.base.data.val_fraction <= 0:
        raise ConfigError(
            "a search optimises validation accuracy, so it needs a validation split; set "
            "data.val_fraction above 0 (the test split stays for the best configuration)")


def _state_counts(trials: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def _finished(t: Any) -> bool:
    """Trials that count towards the target: complete, pruned, or failed by an error (a trial
    failed because its worker died has no 'error' and is retried)."""
    name = t.state.name
    return name in ("COMPLETE", "PRUNED") or (name == "FAIL" and "error" in t.user_attrs)


def _point_key(params: dict[str, Any]) -> str:
    return json.dumps(sorted(params.items()), default=str)


def grid_order(space: SearchSpace, seed: int) -> list[dict[str, Any]]:
    """The grid in the order workers visit it: shuffled with ``seed``, so that a study cut
    short by --trials or --budget-minutes has still sampled the whole space evenly."""
    points = space.grid()
    random.Random(seed).shuffle(points)
    return points


class _FileLock:
    """An exclusive lock on a file (fcntl), held for the few milliseconds a claim takes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None

    def __enter__(self) -> _FileLock:
        import fcntl

        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


class _Heartbeat:
    """Records the trial's heartbeat every ``interval`` seconds in a daemon thread."""

    def __init__(self, storage: Any, trial_id: int, interval: float) -> None:
        self._stop = threading.Event()
        storage.record_heartbeat(trial_id)

        def beat() -> None:
            while not self._stop.wait(interval):
                try:
                    storage.record_heartbeat(trial_id)
                except Exception:
                    log.debug("heartbeat failed", exc_info=True)

        self._thread = threading.Thread(target=beat, daemon=True, name="cnnlab-heartbeat")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _ask(study: Any) -> Any:
    with warnings.catch_warnings():
        # "Heartbeat of storage is supposed to be used with Study.optimize": we record the
        # heartbeat ourselves (_Heartbeat), as optimize would
        warnings.simplefilter("ignore", UserWarning)
        return study.ask()


@dataclass
class _Claim:
    trial: Any
    params: dict[str, Any]


def claim(study: Any, settings: TuneSettings, lock: _FileLock,
          order: list[dict[str, Any]] | None) -> _Claim | str | None:
    """Start the next trial, or say why not: None (the study is done) or "wait" (only trials
    that other workers are running are left; one of them may yet fail and need a rerun)."""
    optuna = _optuna()
    target = settings.target_trials()
    with lock:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fail_stale_trials is marked experimental
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        finished = sum(map(_finished, trials))
        running = sum(t.state.name == "RUNNING" for t in trials)
        if finished >= target:
            return None
        if order is not None:
            # a waiting trial has no params yet, only the fixed ones it was enqueued with
            taken = {_point_key(t.params or t.system_attrs.get("fixed_params", {}))
                     for t in trials if t.state.name in ("RUNNING", "WAITING") or _finished(t)}
            point = next((p for p in order if _point_key(p) not in taken), None)
            if point is None:
                return "wait" if running else None
            study.enqueue_trial(point, skip_if_exists=False)
            trial = _ask(study)
            # ask() pops the oldest waiting trial: ours, or one a dead worker enqueued (also an
            # unclaimed grid point; ours then waits for the next claim)
            return _Claim(trial, suggest(trial, settings.space))
        if finished + running >= target:
            return "wait"
        trial = _ask(study)
    return _Claim(trial, suggest(trial, settings.space))


# --- trials -----------------------------------------------------------------------------------

class _DataCache:
    """Prepared data per distinct data setting, with the test split held back."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[Any, Any]] = {}

    def get(self, cfg: Config) -> tuple[Any, Any]:
        from cnnlab.training.data import prepare_data

        data_settings = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k != "augment"}
        key = json.dumps([data_settings, cfg.train.seed])
        if key not in self._cache:
            data = prepare_data(cfg.data, seed=cfg.train.seed, progress=False)
            self._cache[key] = (dataclasses.replace(data, test=None), data.test)
        return self._cache[key]


def _latency_ms(model: Any) -> float:
    from cnnlab.evaluate.timing import measure_inference

    spec = model.input_spec
    t = measure_inference(model, (spec.channels, spec.height, spec.width), latency_runs=100,
                          batch_size=1, throughput_runs=1, warmup=10)
    return float(t["latency_ms_p50"])


def run_trial(claimed: _Claim, study: Any, settings: TuneSettings, cache: _DataCache,
              on_epoch: Callable[[], None] | None = None) -> None:
    """Train one trial and tell the study how it ended."""
    optuna = _optuna()
    from cnnlab.training.checkpoint import save_checkpoint
    from cnnlab.training.loop import checkpoint_payload, fit

    trial, params = claimed.trial, claimed.params
    beat = _Heartbeat(study._storage, trial._trial_id, settings.heartbeat_s)
    prune = not settings.space.multi_objective  # Optuna prunes single-objective studies only
    try:
        cfg = trial_config(settings.base, params)
        data, _ = cache.get(cfg)

        def report(row: dict[str, float]) -> None:
            trial.set_user_attr("epochs_run", int(row["epoch"]))
            if prune:
                value = row["val_accuracy"]
                trial.report(0.0 if math.isnan(value) else value, int(row["epoch"]))
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {int(row['epoch'])}")
            if on_epoch is not None:
                on_epoch()

        result = fit(cfg, data=data, progress=False, on_epoch=report)
        m = result.metrics
        values = [float(m["val_accuracy"])]
        trial.set_user_attr("train_time_s", m["train_time_s"])
        trial.set_user_attr("params_count", int(m["parameters"]))
        trial.set_user_attr("best_epoch", int(m["best_epoch"]))
        for objective in settings.space.objectives[1:]:
            if objective == "latency_ms":
                latency = _latency_ms(result.model)
                trial.set_user_attr("latency_ms", latency)
                values.append(latency)
            elif objective == "params":
                values.append(float(m["parameters"]))
        # keep the weights of a trial that is (one of) the best so far: finish() tests it
        if _is_best_so_far(study, values):
            path = settings.out / "trials" / f"{trial.number:04d}" / "model.pt"
            save_checkpoint(path, checkpoint_payload(result.model, cfg, data,
                                                     result.model.input_spec, m))
            trial.set_user_attr("checkpoint", str(path.relative_to(settings.out)))
        study.tell(trial, values)
    except optuna.TrialPruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    except CnnlabError as e:  # a setting this combination cannot train with
        trial.set_user_attr("error", str(e))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, e)
    except BaseException:  # interrupted: fail it without 'error', so a rerun retries it
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    finally:
        beat.stop()


def _is_best_so_far(study: Any, values: list[float]) -> bool:
    if len(values) > 1:
        return True  # any trial may land on the Pareto front
    done = [t.value for t in study.get_trials(deepcopy=False, states=(
        _optuna().trial.TrialState.COMPLETE,))]
    return not done or values[0] >= max(done)


# --- workers ----------------------------------------------------------------------------------

def run_worker(settings: TuneSettings, worker: int = 0,
               progress: Callable[[Any], None] | None = None) -> int:
    """Claim and run trials until the study is done or the budget is spent; returns the
    number of trials this worker ran."""
    salt = int(hashlib.sha256(f"{os.getpid()} {time.time_ns()} {worker}".encode()).hexdigest()[:8],
               16)
    study = create_or_load_study(settings, salt=salt)
    if settings.base.train.device == "auto":  # resolve (and log) it once, not every trial
        from cnnlab.device import resolve_device

        t = dataclasses.replace(settings.base.train, device=str(resolve_device("auto")))
        settings = dataclasses.replace(settings, base=dataclasses.replace(settings.base, train=t))
    threads = settings.base.train.threads
    if not threads and settings.workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.workers))
    lock = _FileLock(settings.lock_path)
    order = grid_order(settings.space, settings.seed) if settings.sampler_name == "grid" else None
    deadline = (settings.extra.get("start", time.time()) + 60 * settings.budget_minutes
                if settings.budget_minutes else math.inf)
    cache = _DataCache()
    ran = 0
    while time.time() < deadline:
        claimed = claim(study, settings, lock, order)
        if claimed is None:
            break
        if claimed == "wait":
            time.sleep(settings.heartbeat_s)
            continue
        assert isinstance(claimed, _Claim)
        run_trial(claimed, study, settings, cache,
                  on_epoch=(lambda: progress(study)) if progress else None)
        ran += 1
        if progress is not None:
            progress(study)
    return ran


def _worker_main(settings: TuneSettings, worker: int) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        run_worker(settings, worker)


class _StudyProgress:
    """A progress bar over the study's finished trials, with the best value so far."""

    def __init__(self, settings: TuneSettings, study: Any) -> None:
        self.settings = settings
        self.target = settings.target_trials()
        self.done0 = sum(map(_finished, study.get_trials(deepcopy=False)))
        self.bar = Progress(max(self.target - self.done0, 0), f"{settings.sampler_name} search",
                            "trial", enabled=settings.progress)
        self._last = 0.0

    def __call__(self, study: Any, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 1.0:
            return
        self._last = now
        trials = study.get_trials(deepcopy=False)
        counts = _state_counts(trials)
        done = sum(map(_finished, trials)) - self.done0
        postfix = (f"running {counts.get('RUNNING', 0)} pruned {counts.get('PRUNED', 0)} "
                   f"{_best_text(study, self.settings)}")
        self.bar.update(max(done - self.bar.count, 0), postfix=postfix)

    def close(self, study: Any) -> None:
        self(study, force=True)
        self.bar.close()


def _best_text(study: Any, settings: TuneSettings) -> str:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        return "best -"
    if settings.space.multi_objective:
        return f"pareto {len(study.best_trials)}"
    best = max(complete, key=lambda t: t.value)
    return f"best {best.value:.4f} (#{best.number})"


def run_study(settings: TuneSettings) -> Any:
    """Run the study to its target (or budget) with ``settings.workers`` processes; returns the
    Optuna study. Rerunning continues a study; several commands may share one storage.

    Raises:
        ConfigError: invalid settings, or a study started with other settings.
    """
    settings = dataclasses.replace(settings, extra={**settings.extra, "start": time.time()})
    study = create_or_load_study(settings)
    bar = _StudyProgress(settings, study)
    if settings.workers == 1:
        try:
            run_worker(settings, 0, progress=bar)
        finally:
            bar.close(study)
        return study
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(settings, i), name=f"cnnlab-tune-{i}")
             for i in range(settings.workers)]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            bar(study)
            time.sleep(1.0)
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    finally:
        for p in procs:
            p.join()
        bar.close(study)
    failed = [p.name for p in procs if p.exitcode not in (0, None)]
    if failed:
        raise CnnlabError(f"search worker(s) {', '.join(failed)} exited with an error; see "
                          "their messages above, then rerun the same command to continue")
    return study
