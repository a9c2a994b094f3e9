"""Hyperparameter and architecture search on Optuna: grid, random and TPE samplers, pruning.

A study lives in an Optuna storage (SQLite by default, ``<out>/study.db``), so rerunning the
same command continues it, and several worker processes can share it. A worker is Optuna's
``study.optimize`` over :func:`make_objective`, the validation accuracy of a trial's best
epoch (for two objectives, with latency or parameter count), reported after every epoch for
the pruner. Optuna's heartbeat marks the trial of a dead worker failed, and its
``RetryHeartbeatStaleTrialCallback`` queues it again; ``MaxTrialsCallback`` and the
``timeout`` end the workers. Only the grid sampler takes a lock (:class:`_GridClaim`). The
test split is held back from every trial and used once, for the best configuration, in
:func:`cnnlab.tune.results.finish`.

Longer than 450 lines: the Optuna objective, the worker loop on shared storage, the grid claim
and the study's settings check are one mechanism.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.config import Config, resolve_config
from cnnlab.errors import CnnlabError, ConfigError, invalid_value
from cnnlab.progress import Progress
from cnnlab.tune.space import OBJECTIVES, Param, SearchSpace, nest

__all__ = ["PRUNERS", "SAMPLERS", "TuneSettings", "check_space", "run_study", "trial_config"]

log = logging.getLogger(__name__)

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("sha", "hyperband", "median", "none")
MAX_RETRY = 3  # how often the trial of a dead (or interrupted) worker is run again


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
    study: str | None = None  # default: the name of out
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
        sig = {"space": [dataclasses.asdict(p) for p in self.space.params],
               "objectives": list(self.space.objectives), "base": self.base.to_dict(),
               "sampler": self.sampler_name, "pruner": self.pruner_name, "seed": self.seed}
        if self.sampler_name == "grid":  # older grid studies enqueued every point: not mixable
            sig["grid"] = "optuna"
        return sig


def load_optuna() -> Any:
    """The ``optuna`` module, quiet below errors: Optuna logs a failed trial as two warnings
    and a traceback, where the objective logs one line for a user-caused error itself.

    Raises:
        ConfigError: Optuna is not installed.
    """
    try:
        import optuna
    except ImportError as e:  # pragma: no cover - the tune extra is part of the install
        raise ConfigError(
            "cnnlab tune needs Optuna; install it with `pip install 'cnnlab[tune]'`") from e
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


@contextlib.contextmanager
def _experimental_ok() -> Any:
    """Heartbeats, retries, fail_stale_trials and TPE's multivariate and constant_liar
    options are marked experimental in Optuna 5.0; we use them on purpose."""
    optuna = load_optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


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
    """Ask the trial for a value of every parameter (grid and retried trials return theirs)."""
    params: dict[str, Any] = {}
    for p in space.params:
        if not p.is_range:
            params[p.key] = trial.suggest_categorical(p.key, list(p.values))  # type: ignore[arg-type]
        elif p.is_int:
            params[p.key] = trial.suggest_int(p.key, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            params[p.key] = trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
    return params


def _point_key(params: dict[str, Any]) -> str:
    return json.dumps(sorted(params.items()), default=str)


def _grid_sampler(space: SearchSpace, seed: int) -> Any:
    optuna = load_optuna()
    return optuna.samplers.GridSampler({p.key: list(p.values or ()) for p in space.params},
                                       seed=seed)


def grid_order(space: SearchSpace, seed: int) -> list[dict[str, Any]]:
    """The grid in the order Optuna's grid sampler visits it (trial ``i`` gets point ``i``): a
    shuffle seeded with ``seed``, so that a study cut short by --trials or --budget-minutes has
    still sampled the whole space evenly. Read off an in-memory study, not recomputed."""
    optuna = load_optuna()
    study = optuna.create_study(sampler=_grid_sampler(space, seed))
    return [suggest(study.ask(), space) for _ in space.grid()]


# --- the study --------------------------------------------------------------------------------

FINISHED = ("COMPLETE", "PRUNED")  # the trial states that count towards the study's target


def is_finished(trial: Any) -> bool:
    """Whether a trial counts towards the target: complete or pruned. A failed trial does not
    (a dead worker's is run again; one that failed with an error is reported)."""
    return trial.state.name in FINISHED


def _retry_callback() -> Any:
    """Queues a trial again (WAITING, with its parameters and grid point), at most
    ``MAX_RETRY`` times. Optuna 5.0 names it RetryHeartbeatStaleTrialCallback; the older name,
    RetryFailedTrialCallback, and RDBStorage's failed_trial_callback are deprecated aliases."""
    optuna = load_optuna()
    with _experimental_ok():
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def _sqlite_connect(path: str) -> Any:
    """A connection to a study's SQLite file, in WAL mode.

    Optuna commits every write on its own (a trial takes a dozen: parameters, attributes, its
    grid point, heartbeats), and SQLite's default rollback journal syncs the disk on each
    commit: 10-20 ms apiece on the 2-core machine, more than a tiny trial trains. WAL with
    synchronous=NORMAL syncs at checkpoints (a power cut may lose the last commits, never the
    file) and lets readers work while a worker writes. All workers must share one host.
    """
    import sqlite3

    con = sqlite3.connect(path, timeout=120, check_same_thread=False)  # a pool shares it
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    return con


def open_storage(settings: TuneSettings) -> Any:
    """The study's RDB storage with Optuna's heartbeat and retry of dead workers' trials.

    Raises:
        ConfigError: the storage cannot be opened.
    """
    optuna = load_optuna()
    url = settings.storage_url
    engine_kwargs = None
    if url.startswith("sqlite:///") and "?" not in url and not url.endswith(":memory:"):
        path = url[len("sqlite:///"):]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"creator": lambda: _sqlite_connect(path)}
    try:
        with _experimental_ok():
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=max(1, round(settings.heartbeat_s)),
                grace_period=max(2, round(3 * settings.heartbeat_s)),
                heartbeat_stale_trial_callback=_retry_callback(), engine_kwargs=engine_kwargs)
    except Exception as e:  # SQLAlchemy raises many kinds for a bad URL or an unreachable DB
        raise ConfigError(f"cannot open the study storage {url!r}: {e}") from e


def _sampler(settings: TuneSettings, salt: int) -> Any:
    optuna = load_optuna()
    name = settings.sampler_name
    if name == "grid":  # the same seed in every worker: the seed fixes the visiting order
        return _grid_sampler(settings.space, settings.seed)
    seed = (settings.seed * 1_000_003 + salt) % 2**32  # workers must not draw the same points
    if name == "tpe":
        with _experimental_ok():
            return optuna.samplers.TPESampler(seed=seed, multivariate=True,
                                              constant_liar=settings.workers > 1)
    return optuna.samplers.RandomSampler(seed=seed)


def _pruner(settings: TuneSettings) -> Any:
    optuna = load_optuna()
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

    A study started with other settings is refused once it has a finished trial; one whose
    every trial failed (wrong data, say) holds nothing worth keeping and starts again.

    Raises:
        ConfigError: the study exists with other settings, or the storage cannot be opened.
    """
    optuna = load_optuna()
    check_settings(settings)
    storage = open_storage(settings)
    directions = [OBJECTIVES[o][0] for o in settings.space.objectives]

    def create() -> Any:
        return optuna.create_study(
            storage=storage, study_name=settings.study_name, directions=directions,
            sampler=_sampler(settings, salt), pruner=_pruner(settings), load_if_exists=True)

    study = create()
    signature = json.loads(json.dumps(settings.signature()))
    saved = study.user_attrs.get("cnnlab")
    if saved is not None and saved != signature:
        with _experimental_ok():
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        if any(is_finished(t) or t.state.name == "RUNNING" for t in trials):
            changed = sorted(k for k in signature if saved.get(k) != signature.get(k))
            raise ConfigError(
                f"study {settings.study_name!r} in {settings.storage_url} was started with "
                f"other settings ({', '.join(changed)} differ); rerun it with the same settings "
                "to continue it, or give a new study another name (set study) or directory "
                "(set out)")
        log.info("study %r: none of its %d trial(s) finished; starting it again with these "
                 "settings", settings.study_name, len(trials))
        optuna.delete_study(study_name=settings.study_name, storage=storage)
        study, saved = create(), None
    if saved is None:
        study.set_user_attr("cnnlab", signature)
    return study


def check_settings(settings: TuneSettings) -> None:
    """Raises ConfigError for settings that cannot work together."""
    def invalid(name: str, value: object, expected: str) -> ConfigError:
        return ConfigError(invalid_value(name, value, expected, kind="setting of tune"))

    if settings.sampler not in (*SAMPLERS, "auto"):
        raise invalid("sampler", settings.sampler, f"one of {', '.join(SAMPLERS)} or auto")
    if settings.pruner not in (*PRUNERS, "auto"):
        raise invalid("pruner", settings.pruner, f"one of {', '.join(PRUNERS)} or auto")
    if settings.space.multi_objective and settings.pruner_name != "none":
        raise ConfigError(
            f"pruning compares one objective, but space {settings.space.name!r} has two "
            f"({', '.join(settings.space.objectives)}); set pruner='none'")
    if settings.sampler_name == "grid":
        settings.space.grid()
    if settings.trials is not None and settings.trials < 1:
        raise invalid("trials", settings.trials, ">= 1")
    if not (settings.heartbeat_s > 0 and math.isfinite(settings.heartbeat_s)):
        raise invalid("heartbeat_s", settings.heartbeat_s, "a finite number > 0 (seconds)")
    if not 0 <= settings.seed <= 2**32 - 1:
        raise invalid("seed", settings.seed, "in [0, 4294967295]")
    if settings.workers < 1:
        raise invalid("workers", settings.workers, ">= 1")
    if settings.budget_minutes is not None and not settings.budget_minutes > 0:
        raise invalid("budget_minutes", settings.budget_minutes, "> 0")
    if settings.base.data.val_fraction <= 0:
        raise ConfigError(
            "a search optimises validation accuracy, so it needs a validation split; set "
            "data.val_fraction above 0 (the test split stays for the best configuration)")


class _GridClaim:
    """A file lock around the grid sampler's choice, so no two trials run one grid point.

    Optuna's ``GridSampler`` gives trial ``i`` the ``i``-th point of its shuffled grid, but a
    trial numbered past the grid's size (as there are once a trial was retried) gets a random
    unfinished point in ``before_trial``: two processes can draw the same one, and once every
    unfinished point is running it hands out a running one on purpose ("different workers will
    occasionally suggest the same parameter configuration", says its documentation). So a grid
    worker holds this lock from before ``study.ask`` until its trial has its parameters (the
    objective releases it), and waits rather than asks while the only points left are running.
    As a ``study.optimize`` callback it claims the next trial, or stops the worker.
    """

    def __init__(self, settings: TuneSettings, deadline: float) -> None:
        settings.lock_path.parent.mkdir(parents=True, exist_ok=True)
        self._path = settings.lock_path
        self._fd: int | None = None  # flock's: the OS releases it if this process dies
        self._grid = {_point_key(p) for p in settings.space.grid()}
        self._target = settings.target_trials()
        self._deadline = deadline
        self._poll_s = settings.heartbeat_s

    def acquire(self, study: Any) -> bool:
        """Hold the lock with a trial to ask for; False when the grid (or budget) is done."""
        import fcntl

        assert self._fd is None, "flock would wait for this very process"
        while time.time() < self._deadline:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            state = self._next(study)
            if state == "ask":
                return True
            self.release()
            if state == "done":
                return False
            time.sleep(self._poll_s)  # a live worker's trial ends, a dead one's goes stale
        return False

    def release(self) -> None:
        import fcntl

        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _next(self, study: Any) -> str:
        """"ask", "wait" or "done", for the study as it is under the lock."""
        with _experimental_ok():
            load_optuna().storages.fail_stale_trials(study)  # queues dead workers' trials
        trials = study.get_trials(deepcopy=False)
        finished = sum(map(is_finished, trials))
        running = sum(t.state.name == "RUNNING" for t in trials)
        if finished >= self._target:
            return "done"
        if finished + running >= self._target:
            return "wait"  # enough are running, unless one of them dies
        if any(t.state.name == "WAITING" for t in trials):
            return "ask"  # study.ask pops it: a retried trial, with its own point
        if not self._grid <= {_point_key(t.params) for t in trials}:
            return "ask"
        return "wait" if running else "done"

    def __call__(self, study: Any, trial: Any) -> None:
        if not self.acquire(study):
            study.stop()


# --- the objective ----------------------------------------------------------------------------

class DataCache:
    """Prepared data per distinct data setting, with the test split held back."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[Any, Any]] = {}

    def get(self, cfg: Config) -> tuple[Any, Any]:
        """(the data without its test split, the test split) for ``cfg``.

        Raises:
            DataError, DatasetNotFoundError: missing or unreadable data.
        """
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


def make_objective(study: Any, settings: TuneSettings, cache: DataCache, *,
                   claim: _GridClaim | None = None,
                   on_epoch: Callable[[], None] | None = None) -> Callable[[Any], Any]:
    """``objective(trial)``: train the trial's configuration and return its validation
    accuracy (and the space's second objective), reporting every epoch to the pruner.

    A setting that cannot train raises its :class:`~cnnlab.errors.CnnlabError` (the trial
    fails, with the message as its ``error``); a best-so-far trial keeps its weights.
    """
    optuna = load_optuna()
    from cnnlab.inference.checkpoint import save_checkpoint
    from cnnlab.training.loop import checkpoint_payload, fit

    prune = not settings.space.multi_objective  # Optuna prunes single-objective studies only

    def objective(trial: Any) -> Any:
        try:
            params = suggest(trial, settings.space)
        finally:
            if claim is not None:
                claim.release()  # the trial holds its point now
        try:
            cfg = trial_config(settings.base, params)
            data, _ = cache.get(cfg)

            epochs: list[int] = []

            def report(row: dict[str, float]) -> None:
                epochs.append(int(row["epoch"]))
                if prune:
                    value = row["val_accuracy"]
                    trial.report(0.0 if math.isnan(value) else value, epochs[-1])
                    if trial.should_prune():
                        # every storage write is a commit (SQLite: ~20 ms), so not each epoch
                        trial.set_user_attr("epochs_run", epochs[-1])
                        raise optuna.TrialPruned(f"pruned after epoch {epochs[-1]}")
                if on_epoch is not None:
                    on_epoch()

            result = fit(cfg, data=data, progress=False, on_epoch=report)
            trial.set_user_attr("epochs_run", epochs[-1] if epochs else 0)
        except CnnlabError as e:  # a setting this combination cannot train with
            trial.set_user_attr("error", str(e))
            log.warning("trial %d failed: %s", trial.number, e)
            raise
        except KeyboardInterrupt:  # Optuna fails it for good: queue it as a dead worker's
            frozen = study.get_trials(deepcopy=False)[trial.number]  # numbers are positions
            _retry_callback()(study, frozen)
            raise
        m = result.metrics
        values = [float(m["val_accuracy"])]
        trial.set_user_attr("train_time_s", m["train_time_s"])
        trial.set_user_attr("params_count", int(m["parameters"]))
        trial.set_user_attr("best_epoch", int(m["best_epoch"]))
        for name in settings.space.objectives[1:]:
            if name == "latency_ms":
                latency = _latency_ms(result.model)
                trial.set_user_attr("latency_ms", latency)
                values.append(latency)
            elif name == "params":
                values.append(float(m["parameters"]))
        if _is_best_so_far(study, values):
            path = settings.out / "trials" / f"{trial.number:04d}" / "model.pt"
            save_checkpoint(path, checkpoint_payload(result.model, cfg, data,
                                                     result.model.input_spec, m))
            trial.set_user_attr("checkpoint", str(path.relative_to(settings.out)))
        return values if len(values) > 1 else values[0]

    return objective


def _is_best_so_far(study: Any, values: list[float]) -> bool:
    if len(values) > 1:
        return True  # any trial may land on the Pareto front
    done = [t.value for t in study.get_trials(deepcopy=False, states=(
        load_optuna().trial.TrialState.COMPLETE,))]
    return not done or values[0] >= max(done)


# --- workers ----------------------------------------------------------------------------------

def run_worker(settings: TuneSettings, progress: Callable[[Any], None] | None = None,
               cache: DataCache | None = None) -> None:
    """Run ``study.optimize`` until the study has its trials or the budget is spent."""
    optuna = load_optuna()
    study = create_or_load_study(settings, salt=int.from_bytes(os.urandom(4)))  # own draws
    if settings.base.train.device == "auto":  # resolve (and log) it once, not every trial
        from cnnlab.device import resolve_device

        t = dataclasses.replace(settings.base.train, device=str(resolve_device("auto")))
        settings = dataclasses.replace(settings, base=dataclasses.replace(settings.base, train=t))
    if not settings.base.train.threads and settings.workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.workers))
    target = settings.target_trials()
    # at most this many trials per run and worker, so a study whose trials all fail ends
    remaining = target - sum(map(is_finished, study.get_trials(deepcopy=False)))
    deadline = (settings.extra.get("start", time.time()) + 60 * settings.budget_minutes
                if settings.budget_minutes else math.inf)
    if remaining <= 0 or time.time() >= deadline:
        return
    # MaxTrialsCallback looks after each trial: with N workers on random or TPE, up to N - 1
    # trials that were running then still finish (the grid claim waits for them instead)
    states = tuple(getattr(optuna.trial.TrialState, s) for s in FINISHED)
    callbacks: list[Callable[[Any, Any], None]] = [optuna.study.MaxTrialsCallback(target, states)]
    claim = None
    if settings.sampler_name == "grid":
        claim = _GridClaim(settings, deadline)
        callbacks.append(claim)
        if not claim.acquire(study):
            return
    if progress is not None:
        callbacks.append(lambda study, trial: progress(study))
    objective = make_objective(study, settings, cache or DataCache(), claim=claim,
                               on_epoch=(lambda: progress(study)) if progress else None)
    try:
        study.optimize(
            objective, n_trials=remaining, catch=(CnnlabError,), callbacks=callbacks,
            timeout=None if math.isinf(deadline) else max(deadline - time.time(), 0.0))
    finally:
        if claim is not None:
            claim.release()


def _worker_main(settings: TuneSettings) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        run_worker(settings)


class _StudyProgress:
    """A progress bar over the study's finished trials, with the best value so far."""

    def __init__(self, settings: TuneSettings, study: Any) -> None:
        self.settings = settings
        self.done0 = sum(map(is_finished, study.get_trials(deepcopy=False)))
        self.bar = Progress(max(settings.target_trials() - self.done0, 0),
                            f"{settings.sampler_name} search", "trial", enabled=settings.progress)
        self._last = 0.0

    def __call__(self, study: Any, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 1.0:
            return
        self._last = now
        trials = study.get_trials(deepcopy=False)
        done = sum(map(is_finished, trials)) - self.done0
        running = sum(t.state.name == "RUNNING" for t in trials)
        pruned = sum(t.state.name == "PRUNED" for t in trials)
        postfix = f"running {running} pruned {pruned} {_best_text(trials, self.settings)}"
        self.bar.update(max(done - self.bar.count, 0), postfix=postfix)

    def close(self, study: Any) -> None:
        self(study, force=True)
        self.bar.close()


def _best_text(trials: list[Any], settings: TuneSettings) -> str:
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if not complete:
        return "best -"
    if settings.space.multi_objective:
        return f"{len(complete)} complete"
    best = max(complete, key=lambda t: t.value)
    return f"best {best.value:.4f} (#{best.number})"


def run_study(settings: TuneSettings) -> Any:
    """Run the study to its target (or budget) with ``settings.workers`` processes; returns the
    Optuna study. Rerunning continues a study; several commands may share one storage.

    The data is loaded once before the study starts, so missing data is one error, not a
    failure in every trial.

    Raises:
        ConfigError: invalid settings, or a study started with other settings.
        DataError, DatasetNotFoundError: the data cannot be loaded.
    """
    settings = dataclasses.replace(settings, extra={**settings.extra, "start": time.time()})
    check_settings(settings)
    cache = DataCache()
    cache.get(settings.base)
    study = create_or_load_study(settings)
    bar = _StudyProgress(settings, study)
    if settings.workers == 1:
        try:
            run_worker(settings, progress=bar, cache=cache)
        finally:
            bar.close(study)
        return study
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(settings,), name=f"cnnlab-tune-{i}")
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
