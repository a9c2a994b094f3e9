"""Train only the last layer of a frozen network on features computed once.

With a frozen backbone every epoch would run the same forward pass over the same images
again; computing the features (the input of the last layer) once and training the last layer
on them gives the same result at a fraction of the cost (no augmentation: each image has one
feature vector). :func:`fit_head_on_features` writes the same run directory as
:func:`~cnnlab.training.loop.fit`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import lr_scheduler

from cnnlab._io import atomic_write_bytes
from cnnlab.config import Config, dump_toml
from cnnlab.data.transforms import normalize
from cnnlab.device import resolve_device
from cnnlab.errors import ConfigError
from cnnlab.inference.checkpoint import save_checkpoint
from cnnlab.models import Classifier
from cnnlab.progress import Progress
from cnnlab.training.data import PreparedData
from cnnlab.training.loop import FitResult, _epoch_seed, _write_history, checkpoint_payload
from cnnlab.training.optim import make_optimizer, make_scheduler
from cnnlab.training.runlock import locks_run_dir

__all__ = ["extract_features", "fit_head_on_features"]


@torch.inference_mode()
def extract_features(model: Classifier, images: torch.Tensor, mean: Any, std: Any, *,
                     batch_size: int = 256, device: torch.device | str = "cpu",
                     progress: bool = False, desc: str = "features") -> torch.Tensor:
    """The last layer's inputs ``(N, D)`` (float32, CPU) for uint8 ``images`` ``(N, C, H, W)``,
    with the model in eval mode."""
    model.eval()
    out = []
    bar = Progress(len(images), desc, "img", enabled=progress)
    for i in range(0, len(images), batch_size):
        x = normalize(images[i:i + batch_size].to(device), mean, std)
        f = model.forward_head(model.forward_features(x), pre_logits=True)
        out.append(f.float().cpu())
        bar.update(len(x))
    bar.close()
    return torch.cat(out) if out else torch.empty(0)


@locks_run_dir
def fit_head_on_features(model: Classifier, cfg: Config, data: PreparedData, *,
                         out_dir: str | Path | None = None, overwrite: bool = False,
                         progress: bool = True) -> FitResult:
    """Train the last ``nn.Linear`` of ``model`` on cached features; everything else frozen.

    Uses ``cfg.optim`` (lr, weight decay, schedule), ``cfg.train`` (epochs, batch size, seed,
    early stopping). Keeps the head of the epoch with the best validation accuracy (the last
    epoch without a validation split).

    Raises:
        ConfigError: the model has no linear head whose input the features are.
    """
    from cnnlab.training.finetune import head_module

    out = Path(out_dir) if out_dir is not None else None
    if out is not None and (out / "model.pt").exists() and not overwrite:
        raise ConfigError(f"{out} already holds a run; set overwrite=True to replace it")
    t = cfg.train
    device = resolve_device(t.device)
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.manual_seed(t.seed)
    model = model.to(device)
    head = head_module(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)

    t0 = time.perf_counter()
    feats = {}
    for split, ds in (("train", data.train), ("val", data.val), ("test", data.test)):
        if ds is not None:
            feats[split] = extract_features(model, ds.images, data.mean, data.std,
                                            device=device, progress=progress,
                                            desc=f"{split} features")
    feature_time = time.perf_counter() - t0
    if feats["train"].shape[1] != head.in_features:
        raise ConfigError(
            f"{type(model).__name__}.forward_head(pre_logits=True) gives {feats['train'].shape[1]}"
            f" features but its last layer takes {head.in_features}; the feature cache needs "
            "them to match (set feature_cache=False)")
    x_train, y_train = feats["train"].to(device), data.train.targets.to(device)
    n = len(x_train)
    steps = math.ceil(n / t.batch_size)
    # the optimiser, schedule and batch order of fit(), so caching changes nothing but speed
    opt = make_optimizer(head, cfg.optim)
    scheduler, when = make_scheduler(opt, cfg.optim, epochs=t.epochs, steps_per_epoch=steps)
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"val_accuracy": -1.0, "val_loss": math.inf, "epoch": 0,
                            "state": None}
    bad = 0
    train_time = 0.0
    bar = Progress(t.epochs, "head epochs", "epoch", enabled=progress)
    for epoch in range(t.epochs):
        head.train()
        gen = torch.Generator(device=device).manual_seed(_epoch_seed(t.seed, epoch) + 1)
        perm = torch.randperm(n, device=device, generator=gen)
        s0 = time.perf_counter()
        loss_sum, correct = 0.0, 0
        for i in range(steps):
            idx = perm[i * t.batch_size:(i + 1) * t.batch_size]
            logits = head(x_train[idx])
            loss = F.cross_entropy(logits, y_train[idx], label_smoothing=t.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if when == "step" and scheduler is not None:
                scheduler.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y_train[idx]).sum())
        if when == "epoch" and scheduler is not None:
            scheduler.step()
        epoch_time = time.perf_counter() - s0
        train_time += epoch_time
        val_loss, val_acc = _score(head, feats.get("val"), data.val)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / n, "train_accuracy": correct / n,
               "val_loss": val_loss, "val_accuracy": val_acc,
               "lr": opt.param_groups[0]["lr"], "epoch_time_s": epoch_time,
               "images_per_s": n / epoch_time if epoch_time > 0 else float("nan")}
        history.append(row)
        if when == "plateau" and isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_loss if data.val is not None else row["train_loss"])
        improved = data.val is None or val_acc > best["val_accuracy"] or (
            val_acc == best["val_accuracy"] and val_loss < best["val_loss"])
        gained = data.val is None or val_acc > best["val_accuracy"] + t.min_delta
        bad = 0 if gained else bad + 1
        if improved:
            best = {"val_accuracy": val_acc, "val_loss": val_loss, "epoch": epoch + 1,
                    "state": {k: v.detach().clone() for k, v in head.state_dict().items()}}
        bar.update(1, postfix=f"loss {row['train_loss']:.4f}"
                   + (f" val_acc {val_acc:.4f}" if data.val is not None else ""))
        if t.early_stopping and bad >= t.early_stopping:
            break
    bar.close()
    head.load_state_dict(best["state"])
    model.eval()
    metrics: dict[str, Any] = {
        "train_time_s": round(train_time, 4), "feature_time_s": round(feature_time, 3),
        "epochs_run": len(history), "best_epoch": best["epoch"],
        "stopped_early": len(history) < t.epochs, "train_images": n,
        "images_per_s": round(n * len(history) / train_time, 1) if train_time else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in head.parameters()),
    }
    for split, ds in (("val", data.val), ("test", data.test)):
        if ds is not None:
            split_loss, split_acc = _score(head, feats[split], ds)
            metrics[f"{split}_loss"] = round(split_loss, 6)
            metrics[f"{split}_accuracy"] = round(split_acc, 6)
            metrics[f"{split}_images"] = len(ds)
    for p in model.parameters():
        p.requires_grad_(True)
    checkpoint = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        text = dump_toml(cfg.to_dict())
        atomic_write_bytes(out / "config.toml", lambda f: f.write(text.encode()))
        _write_history(out / "history.csv", history)
        checkpoint = save_checkpoint(out / "model.pt", checkpoint_payload(
            model, cfg, data, model.input_spec, metrics))
        m_text = json.dumps(metrics, indent=2) + "\n"
        atomic_write_bytes(out / "metrics.json", lambda f: f.write(m_text.encode()))
    return FitResult(model=model, config=cfg, history=history, metrics=metrics,
                     classes=data.classes, preprocessing=data.preprocessing, out_dir=out,
                     checkpoint=checkpoint)


@torch.no_grad()
def _score(head: nn.Module, x: torch.Tensor | None, ds: Any) -> tuple[float, float]:
    if x is None or ds is None:
        return float("nan"), float("nan")
    head.eval()
    logits = head(x.to(next(head.parameters()).device)).float().cpu()
    return (F.cross_entropy(logits, ds.targets).item(),
            (logits.argmax(1) == ds.targets).float().mean().item())
