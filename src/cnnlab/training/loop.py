"""The training loop: one step path, validation, early stopping, checkpoints and history.

:func:`fit` reads top to bottom as its steps: read ``last.pt`` when resuming, check the
model's options, load the data, :func:`_setup` the components (model, optimizer, schedule,
EMA, scaler, augmentation), :func:`_restore` a resumed run's state, then per epoch
:func:`train_one_epoch`, :func:`validate` and :func:`save_epoch`, and at the end
:func:`final_metrics`.

Everything random in an epoch (shuffling, augmentation, dropout) is seeded from
``(seed, epoch)``, so a resumed run ends exactly where an uninterrupted one does, and the
same seed on the CPU gives the same result.

Longer than 450 lines: the training loop's named steps (setup, restore, one epoch, validation,
saving, final figures) stay in one file so that :func:`fit` reads top to bottom.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.overrides import TorchFunctionMode

from cnnlab._io import atomic_write_bytes
from cnnlab.config import Config, TrainConfig, dump_toml, resolve_saved_config
from cnnlab.data.robust import RobustAugment, RobustAugmentConfig
from cnnlab.data.transforms import AugmentConfig, BatchAugment, normalize
from cnnlab.device import cpu_supports_bf16, resolve_device
from cnnlab.errors import CheckpointError, ConfigError
from cnnlab.inference.batched import autocast_context, evaluate_loss_accuracy, predict_logits
from cnnlab.inference.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.models import MODELS, Classifier, InputSpec, create_model
from cnnlab.models.sizes import check_feature_maps
from cnnlab.progress import Progress
from cnnlab.training import distributed
from cnnlab.training.adversarial import Adversary, make_adversary
from cnnlab.training.data import MANIFEST_NAME, PreparedData, prepare_data
from cnnlab.training.folders import MAX_AUTO_SIDE
from cnnlab.training.optim import make_optimizer, make_scheduler
from cnnlab.training.runlock import locks_run_dir
from cnnlab.training.tracking import TensorBoard

__all__ = ["FitResult", "RunState", "Trainer", "check_model_settings", "final_metrics", "fit",
           "save_epoch", "train_one_epoch", "validate"]

log = logging.getLogger("cnnlab")

HISTORY_FIELDS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                  "epoch_time_s", "images_per_s"]


@dataclass
class FitResult:
    """What :func:`fit` returns: the best model (EMA weights when EMA is on) and its figures."""

    model: Classifier
    config: Config
    history: list[dict[str, float]]
    metrics: dict[str, Any]
    classes: list[str]
    preprocessing: dict[str, Any]
    out_dir: Path | None = None
    checkpoint: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % (2**63)


def _augment_config(cfg: Config) -> AugmentConfig | None:
    a = cfg.data.augment
    if not a.enabled:
        return None
    return AugmentConfig(
        rotation=a.rotation, scale=(a.scale_min, a.scale_max), translate=a.translate,
        shear=a.shear, elastic_alpha=a.elastic_alpha, elastic_sigma=a.elastic_sigma,
        hflip=a.hflip, vflip=a.vflip, brightness=a.brightness, contrast=a.contrast,
    )


def _style_classes(classes: Sequence[str]) -> tuple[int, int]:
    """The class indices of the digits 1 and 7, for the robust augmentation's styles."""
    names = [str(c).strip() for c in classes]
    if "1" not in names or "7" not in names:
        raise ConfigError(
            "data.augment.robust_styles draws the European styles of the digits 1 and 7, but "
            f"this dataset has no classes named '1' and '7' (it has {names[:12]}); turn the "
            "styles off for it: --set data.augment.robust_styles=false")
    return names.index("1"), names.index("7")


def _flag(value: str, device: torch.device) -> bool:
    return value == "on" or (value == "auto" and device.type == "cuda")


def build_model(cfg: Config, data: PreparedData) -> Classifier:
    """Create the configured model for the data's shape, classes and normalisation."""
    model = create_model(cfg.model.name, in_channels=data.channels,
                         num_classes=len(data.classes), input_size=data.size, **cfg.model.kwargs)
    model.input_spec = InputSpec(data.channels, data.size[0], data.size[1], data.mean, data.std)
    return model


def model_record(cfg: Config, data: PreparedData) -> dict[str, Any]:
    """The 'model' entry of a checkpoint: what create_model needs to rebuild it."""
    return {"name": cfg.model.name,
            "kwargs": {"in_channels": data.channels, "num_classes": len(data.classes),
                       "input_size": list(data.size), **cfg.model.kwargs}}


def checkpoint_payload(weights: nn.Module, cfg: Config, data: PreparedData,
                       input_spec: InputSpec, metrics: dict[str, Any]) -> dict[str, Any]:
    """What ``model.pt`` holds: everything :func:`cnnlab.load` needs to rebuild the model."""
    return {"model": model_record(cfg, data), "state_dict": _cpu_state(weights),
            "classes": data.classes, "input_spec": input_spec.to_dict(),
            "preprocessing": data.preprocessing, "config": cfg.to_dict(), "metrics": metrics}


def _env_record(device: torch.device) -> dict[str, Any]:
    from cnnlab.inference.checkpoint import library_versions

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"versions": library_versions(), "device": str(device),
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "git_commit": commit}


@locks_run_dir  # one writer per run directory (a second process fails at once)
def fit(
    config: Config | None,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    data: PreparedData | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    model: Classifier | None = None,
    lr_groups: Callable[[Classifier], list[tuple[list[nn.Parameter], float]]] | None = None,
    on_epoch_start: Callable[[int, Classifier], None] | None = None,
) -> FitResult:
    """Train ``config`` and return the best model with its history and metrics.

    With ``out_dir`` the run directory gets ``config.toml``, ``model.pt`` (best), ``last.pt``,
    ``history.csv``, ``metrics.json``, ``env.json`` and, for folders, ``splits.json``.
    ``resume=True`` continues the run in ``out_dir`` from its ``last.pt`` (a finished run
    trains no more and writes its final figures again); ``config=None`` then means the run's
    saved config (the CLI passes the saved config with the user's overrides, e.g. more
    epochs, applied on top). A directory that already holds a run is only replaced with
    ``overwrite=True``. ``on_epoch`` is called with each epoch's history row once the epoch
    is saved; an exception it raises (a search pruning the trial, say) ends training and
    propagates.

    Fine-tuning passes the starting ``model`` (pretrained weights, a new head) instead of
    having one built from ``config.model``; ``lr_groups`` splits its parameters into groups
    with learning-rate factors (discriminative learning rates; every parameter is in the
    optimizer, frozen ones simply get no gradient); ``on_epoch_start(epoch, model)`` runs
    after ``model.train()`` each epoch (to freeze, unfreeze, or keep a frozen backbone in eval
    mode).

    Raises:
        ConfigError: invalid settings or model options, ``resume`` without a resumable run,
            or a training loss that is no longer finite (the run diverged).
        DataError, DatasetNotFoundError: missing or unreadable data.
        DeviceError: a requested device that is absent.
    """
    out = Path(out_dir) if out_dir is not None else None
    last = _read_last(out, resume=resume, overwrite=overwrite)
    cfg = _settings(config, last)
    t = cfg.train
    device, amp, channels_last = _devices(t)
    rank, device = distributed.setup(device)  # (None, device) outside torchrun
    progress = progress and (rank is None or rank.is_main)
    if model is None:
        check_model_settings(cfg)  # an invalid model fails before minutes of data loading
    torch.manual_seed(t.seed)
    if data is None:
        data = prepare_data(cfg.data, seed=t.seed, progress=progress)
    trainer = _setup(cfg, data, device, amp, channels_last, model=model, lr_groups=lr_groups)
    if model is None:  # a kernel larger than the image, a map pooled to nothing: say so now
        check_feature_maps(trainer.model, cfg.model.name, data.channels, *data.size,
                           rebuild=functools.partial(_meta_model, cfg, data.channels))
    if rank is not None:
        trainer.rank, trainer.step_model = rank, rank.wrap(trainer.model, device)
        out = out if rank.is_main else None  # only rank 0 writes the run directory
    state = _restore(last, trainer, cfg, data, out) if last is not None else RunState()
    if out is not None:
        _write_run_files(out, cfg, data, device)
    start = t.epochs if state.stopped_early else state.epoch
    tb = TensorBoard.open(out, resume_from_epoch=start) if out is not None else None
    for epoch in range(start, t.epochs):
        bar = Progress(len(data.train), f"epoch {epoch + 1}/{t.epochs}", "img", enabled=progress)
        row = {"epoch": epoch + 1, **train_one_epoch(trainer, data, t, epoch, bar=bar,
                                                     on_epoch_start=on_epoch_start)}
        row["val_loss"], row["val_accuracy"] = validate(trainer, data, t)
        row = {k: row[k] for k in HISTORY_FIELDS}  # history.csv's order
        _step_epoch_schedule(trainer, row, has_val=data.val is not None)
        state.history.append(row)
        if tb is not None:
            tb.epoch(row)
        bar.close(postfix=f"loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f}"
                  + (f" val_loss {row['val_loss']:.4f} val_acc {row['val_accuracy']:.4f}"
                     if data.val else ""))
        improved = _track_best(state, row, has_val=data.val is not None, t=t)
        if out is not None:
            save_epoch(out, trainer, state, cfg, data, improved=improved)
        elif improved:
            state.best_state = _cpu_state(trainer.eval_model)
        if on_epoch is not None:
            on_epoch(row)
        if state.stopped_early:
            log.info("early stopping: no validation gain for %d epochs", state.bad_epochs)
            break

    if rank is not None:
        rank.barrier()  # rank 0 has written the last epoch
        rank.close()
    final, metrics = final_metrics(trainer, data, t, state, out)
    checkpoint = None
    if out is not None:
        checkpoint = save_checkpoint(out / "model.pt", checkpoint_payload(
            final, cfg, data, trainer.model.input_spec, metrics))
        text = json.dumps(metrics, indent=2) + "\n"
        atomic_write_bytes(out / "metrics.json", lambda f: f.write(text.encode()))
    if tb is not None:
        tb.close(cfg.to_dict(), metrics)
    return FitResult(model=_as_classifier(final, trainer.model), config=cfg,
                     history=state.history, metrics=metrics, classes=data.classes,
                     preprocessing=data.preprocessing, out_dir=out, checkpoint=checkpoint)


# --- the steps of fit, in the order it takes them ---------------------------------------------

@dataclass
class RunState:
    """Where a run stands after its last finished epoch: what ``last.pt`` keeps to resume."""

    epoch: int = 0  # epochs finished
    history: list[dict[str, float]] = field(default_factory=list)
    # the best epoch: higher validation accuracy, ties broken by lower loss
    best: dict[str, float] = field(default_factory=lambda: {
        "val_accuracy": -1.0, "val_loss": math.inf, "epoch": 0})
    bad_epochs: int = 0  # epochs since the last validation gain of at least min_delta
    train_time_s: float = 0.0
    stopped_early: bool = False
    # without a run directory, the best weights stay here (with one, model.pt holds them)
    best_state: dict[str, torch.Tensor] | None = None


@dataclass
class Trainer:
    """The components of the one training step; the config picks them, none forks the step."""

    model: Classifier
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch LR scheduler, or None
    sched_when: str  # "step" (every batch), "epoch", "plateau" or "none"
    ema: AveragedModel | None
    scaler: torch.amp.GradScaler
    augment: BatchAugment | RobustAugment | None
    criterion: nn.Module
    device: torch.device
    amp: bool
    channels_last: bool
    images: torch.Tensor  # the training split on the device, uint8 (N, C, H, W)
    targets: torch.Tensor  # (N,)
    # in a distributed run: this rank, and the DistributedDataParallel module the step calls
    rank: distributed.Rank | None = None
    step_model: nn.Module | None = None
    adversary: Adversary | None = None  # train.adversarial: the batch becomes adversarial
    # per training image: its weight in the loss (PreparedData.train_weights; None = all 1)
    sample_weights: torch.Tensor | None = None

    @property
    def eval_model(self) -> nn.Module:
        """What validation, the checkpoints and the final figures use: the EMA when it is on."""
        return self.ema.module if self.ema is not None else self.model


def _read_last(out: Path | None, *, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """``last.pt`` of the run to resume, or None; refuses to overwrite a run by accident.

    Raises:
        ConfigError: ``out`` holds a run, and neither ``resume`` nor ``overwrite`` is given;
            or ``resume`` without a ``last.pt``.
        CheckpointError: a ``last.pt`` without training state.
    """
    if out is not None and not resume and not overwrite and (out / "last.pt").exists():
        raise ConfigError(
            f"{out} already holds a run; set resume=True to continue it, overwrite=True to "
            "replace it, or choose another directory"
        )
    if not resume:
        return None
    if out is None or not (out / "last.pt").is_file():
        raise ConfigError(
            f"resume=True needs a run directory with last.pt; {str(out)!r} has none. "
            "Start the run without resume=True first."
        )
    last = load_checkpoint(out / "last.pt")
    if last.get("train_state") is None:
        raise CheckpointError(f"{out / 'last.pt'} has no training state to resume from")
    return last


def _settings(config: Config | None, last: dict[str, Any] | None) -> Config:
    """The validated config: ``config``, or the resumed run's own when it is None.

    Raises:
        ConfigError: no config and nothing to resume, invalid settings, or another number of
            epochs for a schedule laid out over the whole run.
    """
    if config is None:
        if last is None:
            raise ConfigError("fit() needs a config unless it resumes a run")
        config = resolve_saved_config(last["config"])
    cfg = config.validate()
    if last is not None:
        saved_epochs = int(last["config"]["train"]["epochs"])
        if cfg.train.epochs != saved_epochs and cfg.optim.scheduler in ("onecycle", "cosine"):
            raise ConfigError(
                f"cannot change the number of epochs ({saved_epochs} -> {cfg.train.epochs}) when "
                f"resuming a run with the {cfg.optim.scheduler!r} schedule, which is laid out "
                "over the whole run; start a new run instead"
            )
    return cfg


def _devices(t: TrainConfig) -> tuple[torch.device, bool, bool]:
    """The device, whether to autocast, whether to use channels_last; sets torch's threads.

    Raises:
        DeviceError: a requested device that is absent.
    """
    device = resolve_device(t.device)
    if t.threads:
        torch.set_num_threads(t.threads)
    amp = _flag(t.amp, device)
    if amp and device.type == "cpu" and not cpu_supports_bf16():
        # bf16 autocast pays only where the CPU computes bf16 natively (the recipes' speed-up
        # was measured on such a CPU); elsewhere it would only round: fp32, and say so once
        log.warning("bf16 autocast is off: train.amp = %r asks for it, but this CPU has no "
                    "native bf16 (avx512_bf16/amx_bf16); training in fp32", t.amp)
        amp = False
    return device, amp, _flag(t.channels_last, device)


class _SkipNormalInit(TorchFunctionMode):
    """``Tensor.normal_`` as a no-op. On the meta device, its first call imports torch's
    compiler stack (sympy, dynamo: 1-2 s measured on the 2-core machine) to fill a tensor
    that holds no data anyway."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        if func is torch.Tensor.normal_:
            return args[0]
        return func(*args, **(kwargs or {}))


def check_model_settings(cfg: Config) -> None:
    """Refuse an unknown model, or model options its builder does not take or accept, before
    any data is loaded.

    Every builder takes ``**kwargs`` and checks them against its family's config dataclass,
    so its signature cannot tell; the builder itself is run, on the meta device (shapes
    without memory or arithmetic), at the configured input size or, with
    ``data.image_size = 0``, at the largest size data trains at without it (224), so a model
    that fits the data fits the probe too. It leaves the random number generators alone.

    Raises:
        RegistryError: an unknown model (with "did you mean").
        ConfigError: an option the model does not take (naming the option and the model, and
            the options it takes), or an invalid value (naming the option).
    """
    MODELS.entry(cfg.model.name)
    side = cfg.data.image_size or MAX_AUTO_SIDE
    with torch.device("meta"), _SkipNormalInit():
        create_model(cfg.model.name, in_channels=cfg.data.channels or 1, num_classes=10,
                     input_size=side, **cfg.model.kwargs)


def _meta_model(cfg: Config, channels: int, height: int, width: int) -> nn.Module:
    """The configured model for another input size, on the meta device (no memory)."""
    with torch.device("meta"), _SkipNormalInit():
        return create_model(cfg.model.name, in_channels=channels, num_classes=10,
                            input_size=(height, width), **cfg.model.kwargs)


def _setup(cfg: Config, data: PreparedData, device: torch.device, amp: bool,
           channels_last: bool, *, model: Classifier | None,
           lr_groups: Callable[[Classifier], list[tuple[list[nn.Parameter], float]]] | None,
           ) -> Trainer:
    """The model (built from ``cfg.model``, or the given one), optimizer, schedule, EMA,
    gradient scaler, augmentation and loss, on ``device``.

    Raises:
        ConfigError: an empty training or validation split, or a given model that does not fit
            the data.
    """
    t = cfg.train
    if len(data.train) < 1:
        raise ConfigError("the training split is empty; lower data.val_fraction or add images")
    if data.val is not None and len(data.val) < 1:  # no epoch could be judged the best
        raise ConfigError("the validation split is empty: it has no images to pick the best "
                          "epoch by; add images to it, or set data.val_fraction = 0 to train "
                          "without validation (every epoch then counts as the best)")
    if model is None:
        model = build_model(cfg, data)
    else:
        _check_given_model(model, data)
    model = model.to(device)
    if channels_last:
        # torch's stubs give Module.to no memory_format, which it accepts (and documents)
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = make_optimizer(model, cfg.optim,
                               groups=lr_groups(model) if lr_groups is not None else None)
    scheduler, sched_when = make_scheduler(optimizer, cfg.optim, epochs=t.epochs,
                                           steps_per_epoch=math.ceil(len(data.train) /
                                                                     t.batch_size))
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema), use_buffers=True)
           if t.ema > 0 else None)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda"
                                  and not torch.cuda.is_bf16_supported())
    augment_cfg = _augment_config(cfg)
    affine = BatchAugment(augment_cfg, data.mean, data.std) if augment_cfg is not None else None
    augment: BatchAugment | RobustAugment | None = affine
    if affine is not None and cfg.data.augment.kind == "robust":  # noise, blur, morphology
        augment = RobustAugment(affine, RobustAugmentConfig(
            p=cfg.data.augment.robust_p, occlusion=cfg.data.augment.robust_occlusion,
            erase_edges=cfg.data.augment.robust_erase_edges,
            outline=cfg.data.augment.robust_outline,
            outline_share=cfg.data.augment.robust_outline_share,
            style_classes=(_style_classes(data.classes) if cfg.data.augment.robust_styles
                           else None),
            style_scale=cfg.data.augment.robust_style_scale,
            crop=cfg.data.augment.robust_crop))
    return Trainer(model=model, optimizer=optimizer, scheduler=scheduler, sched_when=sched_when,
                   ema=ema, scaler=scaler, augment=augment,
                   criterion=nn.CrossEntropyLoss(label_smoothing=t.label_smoothing),
                   device=device, amp=amp, channels_last=channels_last,
                   images=data.train.images.to(device), targets=data.train.targets.to(device),
                   adversary=make_adversary(t.adversarial, data.mean, data.std),
                   sample_weights=None if data.train_weights is None
                   else data.train_weights.to(device, torch.float32))


def _restore(last: dict[str, Any], trainer: Trainer, cfg: Config, data: PreparedData,
             out: Path | None) -> RunState:
    """Load ``last.pt``'s weights and optimizer, schedule, EMA and scaler states into
    ``trainer``; return where the run stood.

    Raises:
        ConfigError: ``last.pt`` holds another model, or was trained on other classes.
    """
    record = model_record(cfg, data)
    if last["model"] != record or last["classes"] != data.classes:
        raise ConfigError(
            f"cannot resume: {out / 'last.pt' if out else 'last.pt'} was trained as "
            f"{last['model']} on classes {last['classes']}, but this run asks for {record} on "
            f"{data.classes}; resume with the run's own settings, or start a new run"
        )
    saved = last["train_state"]
    trainer.model.load_state_dict(last["state_dict_live"])
    trainer.optimizer.load_state_dict(saved["optimizer"])
    if trainer.scheduler is not None and saved.get("scheduler") is not None:
        trainer.scheduler.load_state_dict(saved["scheduler"])
    if trainer.ema is not None and saved.get("ema") is not None:
        trainer.ema.load_state_dict(saved["ema"])
    if saved.get("scaler"):
        trainer.scaler.load_state_dict(saved["scaler"])
    state = RunState(epoch=int(saved["epoch"]), history=list(saved["history"]),
                     best=dict(saved["best"]), bad_epochs=int(saved["bad_epochs"]),
                     train_time_s=float(saved["train_time_s"]),
                     stopped_early=bool(saved.get("stopped_early")))
    epochs = cfg.train.epochs
    if state.stopped_early:
        log.info("%s had stopped early; writing its final figures again", out)
    elif state.epoch >= epochs:
        log.info("%s is complete (%d of train.epochs = %d epochs trained); nothing left to "
                 "train, writing its final figures again", out, state.epoch, epochs)
    else:
        log.info("resuming %s at epoch %d of %d", out, state.epoch + 1, epochs)
    return state


def _write_run_files(out: Path, cfg: Config, data: PreparedData, device: torch.device) -> None:
    """``config.toml`` (resolved), ``env.json`` and, when the data has one, the split
    manifest ``splits.json`` (the files or indices of every split, for ``load_split``)."""
    out.mkdir(parents=True, exist_ok=True)
    texts = {"config.toml": dump_toml(cfg.to_dict()),
             "env.json": json.dumps(_env_record(device), indent=2) + "\n"}
    if data.manifest is not None:
        texts[MANIFEST_NAME] = json.dumps(data.manifest) + "\n"
    for name, text in texts.items():
        atomic_write_bytes(out / name, functools.partial(_write_text, text))


def _write_text(text: str, f: IO[bytes]) -> None:
    f.write(text.encode())


def train_one_epoch(trainer: Trainer, data: PreparedData, t: TrainConfig, epoch: int, *,
                    bar: Progress,
                    on_epoch_start: Callable[[int, Classifier], None] | None = None,
                    ) -> dict[str, float]:
    """One pass over the training split in a seeded order; returns the epoch's
    ``train_loss``, ``train_accuracy``, ``lr`` (at its end), ``epoch_time_s`` and
    ``images_per_s``. ``bar`` shows its progress and stays open for the validation figures.

    Raises:
        ConfigError: the loss is no longer finite (the run diverged; checked every 20 steps
            and at the end, so the check costs no extra device sync per step).
    """
    model, optimizer, device = trainer.model, trainer.optimizer, trainer.device
    torch.manual_seed(_epoch_seed(t.seed, epoch))  # dropout
    gen = torch.Generator(device=device).manual_seed(_epoch_seed(t.seed, epoch) + 1)
    x_train, y_train = trainer.images, trainer.targets
    n_train = len(y_train)
    steps = math.ceil(n_train / t.batch_size)
    perm = torch.randperm(n_train, device=device, generator=gen)
    model.train()
    if on_epoch_start is not None:
        on_epoch_start(epoch, model)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    finite = torch.ones((), device=device, dtype=torch.bool)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = perm[step * t.batch_size:(step + 1) * t.batch_size]
        x = normalize(x_train[idx], data.mean, data.std)  # (B, C, H, W) float
        y = y_train[idx]  # (B,)
        if trainer.augment is not None:
            x = (trainer.augment(x, generator=gen, targets=y)
                 if isinstance(trainer.augment, RobustAugment)
                 else trainer.augment(x, generator=gen))
        scale = 1.0
        if trainer.rank is not None:  # this rank's share of the global (augmented) batch
            x, y, scale = trainer.rank.local_batch(x, y)
            idx = idx[trainer.rank.rank::trainer.rank.world_size]
        clean = None  # TRADES trains on the clean batch and its adversarial twin together
        if trainer.adversary is not None:  # the batch's adversarial examples, as the model is now
            clean = x if trainer.adversary.pairs else None
            with autocast_context(device, trainer.amp):
                x = trainer.adversary(model, x, y, progress=epoch + step / steps, generator=gen)
        if trainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            clean = None if clean is None else clean.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, trainer.amp):
            if clean is None:
                logits = (trainer.step_model or model)(x)  # (B, num_classes)
            else:  # one forward of both halves (one pass through DDP, one batch's statistics)
                logits, adv_logits = (trainer.step_model or model)(torch.cat([clean, x])).chunk(2)
            loss = (trainer.criterion(logits, y) if trainer.sample_weights is None else
                    _weighted_loss(logits, y, trainer.sample_weights[idx], t.label_smoothing))
            if clean is not None and trainer.adversary is not None:
                loss = loss + trainer.adversary.robust_loss(adv_logits, logits)
        optimizer.zero_grad(set_to_none=True)
        trainer.scaler.scale(loss * scale if scale != 1.0 else loss).backward()
        trainer.scaler.step(optimizer)
        trainer.scaler.update()
        if trainer.sched_when == "step":
            trainer.scheduler.step()
        if trainer.ema is not None:
            trainer.ema.update_parameters(model)
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        finite &= torch.isfinite(loss.detach())
        if step % 20 == 0 or step == steps - 1:
            if not finite:
                raise _diverged(epoch, step, steps, optimizer.param_groups[0]["lr"])
            if bar.enabled:
                bar.update(min(n_train, (step + 1) * t.batch_size) - bar.count,
                           postfix=f"loss {loss.item():.4f}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    epoch_time = time.perf_counter() - t0
    if trainer.rank is not None:  # the epoch's figures over all ranks
        loss_sum, correct = trainer.rank.all_sum(loss_sum), trainer.rank.all_sum(correct)
    return {"train_loss": loss_sum.item() / n_train, "train_accuracy": correct.item() / n_train,
            "lr": optimizer.param_groups[0]["lr"], "epoch_time_s": epoch_time,
            "images_per_s": n_train / epoch_time}


def _weighted_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                   label_smoothing: float) -> torch.Tensor:
    """The cross-entropy of a batch as a weighted mean (group reweighting, cnnlab.fairness)."""
    losses = nn.functional.cross_entropy(logits.float(), targets, reduction="none",
                                         label_smoothing=label_smoothing)  # (B,)
    return (losses * weights).sum() / weights.sum().clamp_min(1e-12)


def _diverged(epoch: int, step: int, steps: int, lr: float) -> ConfigError:
    return ConfigError(
        f"training diverged: the training loss is no longer finite (nan or inf) in epoch "
        f"{epoch + 1}, by step {step + 1} of {steps}, at learning rate {lr:g}; lower optim.lr "
        "or warm up (the cosine or onecycle schedule) and start the run again (the epochs "
        "saved before are unchanged)")


def validate(trainer: Trainer, data: PreparedData, t: TrainConfig) -> tuple[float, float]:
    """Validation loss and accuracy of the model evaluation uses (NaN without a split)."""
    if data.val is None:
        return float("nan"), float("nan")
    logits = predict_logits(trainer.eval_model, data.val.images, data.mean, data.std,
                            batch_size=t.eval_batch_size, device=trainer.device,
                            amp=trainer.amp, channels_last=trainer.channels_last)
    return evaluate_loss_accuracy(logits, data.val.targets)


def _step_epoch_schedule(trainer: Trainer, row: dict[str, float], *, has_val: bool) -> None:
    """Step a per-epoch schedule; plateau watches the validation loss (the training loss
    without a validation split)."""
    if trainer.sched_when == "epoch":
        trainer.scheduler.step()
    elif trainer.sched_when == "plateau":
        trainer.scheduler.step(row["val_loss"] if has_val else row["train_loss"])


def _track_best(state: RunState, row: dict[str, float], *, has_val: bool,
                t: TrainConfig) -> bool:
    """Record the finished epoch in ``state``; return whether it is the best so far (without
    validation, every epoch is). Sets ``state.stopped_early`` when early stopping says so."""
    val_loss, val_acc = row["val_loss"], row["val_accuracy"]
    best = state.best
    improved = not has_val or val_acc > best["val_accuracy"] or (
        val_acc == best["val_accuracy"] and val_loss < best["val_loss"])
    # early stopping counts epochs without an accuracy gain of at least min_delta
    gained = not has_val or val_acc > best["val_accuracy"] + t.min_delta
    state.bad_epochs = 0 if gained else state.bad_epochs + 1
    if improved:
        state.best = {"val_accuracy": val_acc, "val_loss": val_loss, "epoch": int(row["epoch"])}
    state.epoch = int(row["epoch"])
    state.train_time_s += row["epoch_time_s"]
    state.stopped_early = t.early_stopping > 0 and state.bad_epochs >= t.early_stopping
    return improved


def save_epoch(out: Path, trainer: Trainer, state: RunState, cfg: Config, data: PreparedData,
               *, improved: bool) -> None:
    """``history.csv``, ``model.pt`` when the epoch improved, and ``last.pt`` (the weights
    evaluation uses, the live weights and everything :func:`_restore` needs)."""
    row = state.history[-1]
    _write_history(out / "history.csv", state.history)
    spec = trainer.model.input_spec
    if improved:
        save_checkpoint(out / "model.pt", checkpoint_payload(
            trainer.eval_model, cfg, data, spec,
            {"best_epoch": state.epoch, **{k: v for k, v in row.items() if k != "epoch"}}))
    train_state = {
        "epoch": state.epoch, "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
        "ema": trainer.ema.state_dict() if trainer.ema is not None else None,
        "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else None,
        "history": state.history, "best": state.best, "bad_epochs": state.bad_epochs,
        "train_time_s": state.train_time_s, "stopped_early": state.stopped_early,
    }
    save_checkpoint(out / "last.pt", {
        **checkpoint_payload(trainer.eval_model, cfg, data, spec, {"epoch": state.epoch}),
        "state_dict_live": _cpu_state(trainer.model), "train_state": train_state})


def final_metrics(trainer: Trainer, data: PreparedData, t: TrainConfig, state: RunState,
                  out: Path | None) -> tuple[nn.Module, dict[str, Any]]:
    """The best weights (from ``model.pt``, or kept in memory), and the run's figures with
    their loss and accuracy on validation and test."""
    final = trainer.eval_model
    if out is not None:
        final.load_state_dict(load_checkpoint(out / "model.pt")["state_dict"])
    elif data.val is not None and state.best_state is not None:
        final.load_state_dict(state.best_state)
    n_train, epochs_run = len(data.train), len(state.history)
    metrics: dict[str, Any] = {
        "train_time_s": round(state.train_time_s, 3),
        "epochs_run": epochs_run,
        "best_epoch": state.best["epoch"],
        "stopped_early": state.stopped_early,
        "train_images": n_train,
        # the reference the service's drift monitor compares predicted classes with
        "train_class_counts": dict(zip(data.classes, torch.bincount(
            data.train.targets, minlength=len(data.classes)).tolist(), strict=True)),
        "images_per_s": (round(n_train * epochs_run / state.train_time_s, 1)
                         if state.train_time_s else None),
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
    }
    for split, ds in (("val", data.val), ("test", data.test)):
        if ds is None:
            continue
        # in fp32, as evaluate, predict and serve run the model: the reported figures are its own
        logits = predict_logits(final, ds.images, data.mean, data.std,
                                batch_size=t.eval_batch_size, device=trainer.device, amp=False,
                                channels_last=trainer.channels_last)
        loss, acc = evaluate_loss_accuracy(logits, ds.targets)
        metrics[f"{split}_loss"], metrics[f"{split}_accuracy"] = round(loss, 6), round(acc, 6)
        metrics[f"{split}_images"] = len(ds)
    return final, metrics


def _check_given_model(model: Classifier, data: PreparedData) -> None:
    spec = model.input_spec
    if (spec.channels, spec.height, spec.width) != (data.channels, *data.size) \
            or model.num_classes != len(data.classes):
        raise ConfigError(
            f"the model takes {spec.channels}x{spec.height}x{spec.width} images and predicts "
            f"{model.num_classes} classes, but the data is {data.channels}x{data.size[0]}x"
            f"{data.size[1]} with {len(data.classes)} classes; adapt the model (input, head) "
            "or the data first"
        )


def _as_classifier(final: nn.Module, model: Classifier) -> Classifier:
    """The best weights as a Classifier in eval mode (an EMA module is a deep copy of ``model``)."""
    assert isinstance(final, Classifier)
    final.input_spec = model.input_spec
    return final.eval()


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in module.state_dict().items()}


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue().encode()))
