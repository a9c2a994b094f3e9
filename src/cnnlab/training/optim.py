"""Optimizers and learning-rate schedules picked by name from an :class:`OptimConfig`."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim import lr_scheduler

from cnnlab.config import OptimConfig

__all__ = ["make_optimizer", "make_scheduler"]


def make_optimizer(
    model: nn.Module, cfg: OptimConfig,
    groups: list[tuple[list[nn.Parameter], float]] | None = None,
) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD. Weight decay skips biases and norm weights (1-D parameters).

    ``groups`` gives (parameters, learning-rate factor) pairs, e.g. smaller rates for earlier
    layers when fine-tuning; they must cover every parameter once, frozen ones included (they
    get no gradient until unfrozen). Without it, every trainable parameter gets ``cfg.lr``.
    """
    if groups is None:
        groups = [([p for p in model.parameters() if p.requires_grad], 1.0)]
    else:
        seen = {id(p) for params, _ in groups for p in params}
        total = sum(len(params) for params, _ in groups)
        if seen != {id(p) for p in model.parameters()} or total != len(seen):
            raise ValueError("make_optimizer: the groups must hold every parameter exactly once")
    param_groups = []
    for params, factor in groups:
        decay = [p for p in params if p.dim() > 1]
        no_decay = [p for p in params if p.dim() <= 1]
        param_groups += [
            {"params": decay, "weight_decay": cfg.weight_decay, "lr": cfg.lr * factor},
            {"params": no_decay, "weight_decay": 0.0, "lr": cfg.lr * factor}]

    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    betas = (cfg.momentum, 0.999)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=betas)
    return torch.optim.Adam(param_groups, lr=cfg.lr, betas=betas)


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, *, epochs: int, steps_per_epoch: int
) -> tuple[lr_scheduler.LRScheduler | None, str]:
    """The scheduler and when to step it: ``"step"`` (every batch), ``"epoch"``, ``"plateau"``
    (every epoch with the validation loss) or ``"none"``."""
    total = max(1, epochs * steps_per_epoch)
    if cfg.scheduler == "none":
        return None, "none"
    if cfg.scheduler == "step":
        return lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma), "epoch"
    if cfg.scheduler == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg.gamma,
                                              patience=cfg.patience), "plateau"
    floor = cfg.final_lr_fraction
    if cfg.scheduler == "onecycle":
        # Smith's one-cycle: cosine warm-up from lr/25 to lr over pct_start of the steps, then
        # cosine annealing to final_lr_fraction * lr (torch's OneCycleLR divides by zero when
        # the warm-up is shorter than one step; this one works for any number of steps)
        warmup = max(1, round(cfg.pct_start * total))

        def one_cycle(step: int) -> float:
            if step < warmup:
                return _cos_between(1 / 25, 1.0, step / warmup)
            return _cos_between(1.0, floor, (step - warmup) / max(1, total - warmup))

        return lr_scheduler.LambdaLR(optimizer, one_cycle), "step"
    # cosine with optional linear warm-up, stepped per batch
    warmup = min(total - 1, round(cfg.warmup_epochs * steps_per_epoch))

    def warmup_cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return _cos_between(1.0, floor, (step - warmup) / max(1, total - warmup))

    return lr_scheduler.LambdaLR(optimizer, warmup_cosine), "step"


def _cos_between(start: float, end: float, t: float) -> float:
    """Cosine interpolation from ``start`` (t=0) to ``end`` (t>=1)."""
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, t))))
