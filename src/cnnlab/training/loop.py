"""The training loop: one step path, validation, early stopping, checkpoints and history.

Everything random in an epoch (shuffling, augmentation, dropout) is seeded from
``(seed, epoch)``, so a resumed run ends exactly where an uninterrupted one does, and the
same seed on the CPU gives the same result.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cnnlab._io import atomic_write_bytes
from cnnlab.config import Config, dump_toml, resolve_config
from cnnlab.data.transforms import AugmentConfig, BatchAugment, normalize
from cnnlab.device import cpu_supports_bf16, resolve_device
from cnnlab.errors import CheckpointError, ConfigError
from cnnlab.inference.batched import autocast_context, evaluate_loss_accuracy, predict_logits
from cnnlab.inference.checkpoint import load_checkpoint, save_checkpoint
from cnnlab.models import MODELS, Classifier, InputSpec, create_model
from cnnlab.progress import Progress
from cnnlab.training.data import MANIFEST_NAME, PreparedData, prepare_data
from cnnlab.training.optim import make_optimizer, make_scheduler
from cnnlab.training.tracking import TensorBoard

__all__ = ["FitResult", "fit"]

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
    ``history.csv``, ``metrics.json`` and ``env.json``. ``resume=True`` continues the run in
    ``out_dir`` from its ``last.pt``; ``config=None`` then means the run's saved config (the CLI
    passes the saved config with the user's overrides, e.g. more epochs, applied on top).
    A directory that already holds a run is only replaced with ``overwrite=True``.
    ``on_epoch`` is called with each epoch's history row once the epoch is saved; an exception
    it raises (a search pruning the trial, say) ends training and propagates.

    Fine-tuning passes the starting ``model`` (pretrained weights, a new head) instead of
    having one built from ``config.model``; ``lr_groups`` splits its parameters into groups
    with learning-rate factors (discriminative learning rates; every parameter is in the
    optimizer, frozen ones simply get no gradient); ``on_epoch_start(epoch, model)`` runs
    after ``model.train()`` each epoch (to freeze, unfreeze, or keep a frozen backbone in eval
    mode).

    Raises:
        ConfigError: invalid settings, or ``resume`` without a resumable run.
        DataError, DatasetNotFoundError: missing or unreadable data.
        DeviceError: a requested device that is absent.
    """
    out = Path(out_dir) if out_dir is not None else None
    state: dict[str, Any] | None = None
    if out is not None and not resume and not overwrite and (out / "last.pt").exists():
        raise ConfigError(
            f"{out} already holds a run; pass --resume to continue it, --overwrite to replace "
            "it, or choose another --out"
        )
    if resume:
        if out is None or not (out / "last.pt").is_file():
            raise ConfigError(
                f"--resume needs a run directory with last.pt; {str(out)!r} has none. "
                "Start the run without --resume first."
            )
        last = load_checkpoint(out / "last.pt")
        state = last.get("train_state")
        if state is None:
            raise CheckpointError(f"{out / 'last.pt'} has no training state to resume from")
        if config is None:
            config = resolve_config(last["config"])
    if config is None:
        raise ConfigError("fit() needs a config unless it resumes a run")
    cfg = config.validate()
    if state is not None:
        saved_epochs = int(last["config"]["train"]["epochs"])
        if cfg.train.epochs != saved_epochs and cfg.optim.scheduler in ("onecycle", "cosine"):
            raise ConfigError(
                f"cannot change the number of epochs ({saved_epochs} -> {cfg.train.epochs}) when "
                f"resuming a run with the {cfg.optim.scheduler!r} schedule, which is laid out "
                "over the whole run; start a new run instead"
            )
    t = cfg.train
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
    channels_last = _flag(t.channels_last, device)

    MODELS.entry(cfg.model.name)  # an unknown model fails before minutes of data loading
    torch.manual_seed(t.seed)
    if data is None:
        data = prepare_data(cfg.data, seed=t.seed, progress=progress)
    if len(data.train) < 1:
        raise ConfigError("the training split is empty; lower data.val_fraction or add images")
    if model is None:
        model = build_model(cfg, data)
    else:
        _check_given_model(model, data)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg.optim,
                               groups=lr_groups(model) if lr_groups is not None else None)
    n_train = len(data.train)
    steps_per_epoch = math.ceil(n_train / t.batch_size)
    scheduler, sched_when = make_scheduler(optimizer, cfg.optim, epochs=t.epochs,
                                           steps_per_epoch=steps_per_epoch)
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(t.ema), use_buffers=True)
           if t.ema > 0 else None)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda"
                                  and not torch.cuda.is_bf16_supported())
    augment_cfg = _augment_config(cfg)
    augment = BatchAugment(augment_cfg, data.mean, data.std) if augment_cfg is not None else None
    criterion = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)

    history: list[dict[str, float]] = []
    start_epoch = 0
    best = {"val_accuracy": -1.0, "val_loss": math.inf, "epoch": 0}
    bad_epochs = 0
    train_time = 0.0
    record = model_record(cfg, data)
    if state is not None:
        if last["model"] != record or last["classes"] != data.classes:
            raise ConfigError(
                f"--resume: {out / 'last.pt'} was trained as {last['model']} on classes "
                f"{last['classes']}, but this run asks for {record} on {data.classes}; resume "
                "with the run's own settings, or start a new run"
            )
        model.load_state_dict(last["state_dict_live"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history = list(state["history"])
        start_epoch = int(state["epoch"])
        best = dict(state["best"])
        bad_epochs = int(state["bad_epochs"])
        train_time = float(state["train_time_s"])
        if state.get("stopped_early"):
            start_epoch = t.epochs  # it ended by early stopping: nothing left to train
            log.info("%s had stopped early; writing its final figures again", out)
        else:
            log.info("resuming %s at epoch %d of %d", out, start_epoch + 1, t.epochs)

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        config_text = dump_toml(cfg.to_dict())
        atomic_write_bytes(out / "config.toml", lambda f: f.write(config_text.encode()))
        env_text = json.dumps(_env_record(device), indent=2) + "\n"
        atomic_write_bytes(out / "env.json", lambda f: f.write(env_text.encode()))
        if data.manifest is not None:  # the files (or indices) of every split, for load_split
            splits_text = json.dumps(data.manifest) + "\n"
            atomic_write_bytes(out / MANIFEST_NAME, lambda f: f.write(splits_text.encode()))

    def payload(weights: nn.Module, metrics: dict[str, Any]) -> dict[str, Any]:
        return checkpoint_payload(weights, cfg, data, model.input_spec, metrics)

    def eval_model() -> nn.Module:
        return ema.module if ema is not None else model

    tb = TensorBoard.open(out, resume_from_epoch=start_epoch) if out is not None else None
    x_train = data.train.images.to(device)
    y_train = data.train.targets.to(device)
    mean, std = data.mean, data.std
    stopped_early = False
    for epoch in range(start_epoch, t.epochs):
        torch.manual_seed(_epoch_seed(t.seed, epoch))  # dropout
        gen = torch.Generator(device=device).manual_seed(_epoch_seed(t.seed, epoch) + 1)
        perm = torch.randperm(n_train, device=device, generator=gen)
        model.train()
        if on_epoch_start is not None:
            on_epoch_start(epoch, model)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        bar = Progress(n_train, f"epoch {epoch + 1}/{t.epochs}", "img", enabled=progress)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for step in range(steps_per_epoch):
            idx = perm[step * t.batch_size:(step + 1) * t.batch_size]
            x = normalize(x_train[idx], mean, std)
            y = y_train[idx]
            if augment is not None:
                x = augment(x, generator=gen)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, amp):
                logits = model(x)
                loss = criterion(logits, y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if sched_when == "step":
                scheduler.step()  # type: ignore[union-attr]
            if ema is not None:
                ema.update_parameters(model)
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            if progress and (step % 20 == 0 or step == steps_per_epoch - 1):
                bar.update(min(n_train, (step + 1) * t.batch_size) - bar.count,
                           postfix=f"loss {loss.item():.4f}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        train_loss = loss_sum.item() / n_train
        train_acc = correct.item() / n_train
        lr = optimizer.param_groups[0]["lr"]

        if data.val is not None:
            val_logits = predict_logits(eval_model(), data.val.images, mean, std,
                                        batch_size=t.eval_batch_size, device=device, amp=amp,
                                        channels_last=channels_last)
            val_loss, val_acc = evaluate_loss_accuracy(val_logits, data.val.targets)
        else:
            val_loss, val_acc = float("nan"), float("nan")
        if sched_when == "epoch":
            scheduler.step()  # type: ignore[union-attr]
        elif sched_when == "plateau":
            scheduler.step(val_loss if data.val is not None else train_loss)  # type: ignore[union-attr]
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_accuracy": train_acc,
               "val_loss": val_loss, "val_accuracy": val_acc, "lr": lr,
               "epoch_time_s": epoch_time, "images_per_s": n_train / epoch_time}
        history.append(row)
        if tb is not None:
            tb.epoch(row)
        bar.close(postfix=f"loss {train_loss:.4f} acc {train_acc:.4f}"
                  + (f" val_loss {val_loss:.4f} val_acc {val_acc:.4f}" if data.val else ""))

        # the best checkpoint: higher validation accuracy, ties broken by lower loss
        improved = data.val is None or val_acc > best["val_accuracy"] or (
            val_acc == best["val_accuracy"] and val_loss < best["val_loss"])
        # early stopping counts epochs without an accuracy gain of at least min_delta
        gained = data.val is None or val_acc > best["val_accuracy"] + t.min_delta
        bad_epochs = 0 if gained else bad_epochs + 1
        if improved:
            best = {"val_accuracy": val_acc, "val_loss": val_loss, "epoch": epoch + 1}
        stop = t.early_stopping > 0 and bad_epochs >= t.early_stopping
        if out is not None:
            _write_history(out / "history.csv", history)
            if improved:
                save_checkpoint(out / "model.pt", payload(eval_model(), {"best_epoch": epoch + 1,
                                **{k: v for k, v in row.items() if k != "epoch"}}))
            train_state = {
                "epoch": epoch + 1, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "ema": ema.state_dict() if ema is not None else None,
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "history": history, "best": best, "bad_epochs": bad_epochs,
                "train_time_s": train_time, "stopped_early": stop,
            }
            save_checkpoint(out / "last.pt", {**payload(eval_model(), {"epoch": epoch + 1}),
                                              "state_dict_live": _cpu_state(model),
                                              "train_state": train_state})
        if improved and out is None:
            best_state = _cpu_state(eval_model())
        if on_epoch is not None:
            on_epoch(row)
        if stop:
            stopped_early = True
            log.info("early stopping: no validation gain for %d epochs", bad_epochs)
            break
    if state is not None and state.get("stopped_early"):
        stopped_early = True

    # the best weights, then final figures on validation and test
    final = eval_model()
    if out is not None:
        final.load_state_dict(load_checkpoint(out / "model.pt")["state_dict"])
    elif data.val is not None and history:
        final.load_state_dict(best_state)
    metrics: dict[str, Any] = {
        "train_time_s": round(train_time, 3),
        "epochs_run": len(history),
        "best_epoch": best["epoch"],
        "stopped_early": stopped_early,
        "train_images": n_train,
        # the reference the service's drift monitor compares predicted classes with
        "train_class_counts": dict(zip(data.classes, torch.bincount(
            data.train.targets, minlength=len(data.classes)).tolist(), strict=True)),
        "images_per_s": round(n_train * len(history) / train_time, 1) if train_time else None,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    for split, ds in (("val", data.val), ("test", data.test)):
        if ds is None:
            continue
        # in fp32, as evaluate, predict and serve run the model: the reported figures are its own
        logits = predict_logits(final, ds.images, mean, std, batch_size=t.eval_batch_size,
                                device=device, amp=False, channels_last=channels_last)
        loss, acc = evaluate_loss_accuracy(logits, ds.targets)
        metrics[f"{split}_loss"], metrics[f"{split}_accuracy"] = round(loss, 6), round(acc, 6)
        metrics[f"{split}_images"] = len(ds)
    checkpoint = None
    if out is not None:
        checkpoint = save_checkpoint(out / "model.pt", payload(final, metrics))
        text = json.dumps(metrics, indent=2) + "\n"
        atomic_write_bytes(out / "metrics.json", lambda f: f.write(text.encode()))
    if tb is not None:
        tb.close(cfg.to_dict(), metrics)
    final_model = _as_classifier(final, model)
    return FitResult(model=final_model, config=cfg, history=history, metrics=metrics,
                     classes=data.classes, preprocessing=data.preprocessing, out_dir=out,
                     checkpoint=checkpoint)


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
