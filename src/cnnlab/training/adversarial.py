"""Adversarial training: fast FGSM with random start (Wong et al. 2020), PGD (Madry et al.
2018) and TRADES (Zhang et al. 2019), and the PGD evaluation that checks it.

``--adversarial fgsm-rs|pgd|trades --eps E [--steps K] [--alpha A]`` (``train.adversarial.*``):
every training batch is replaced by adversarial examples of the model being trained; TRADES
trains on the clean batch and its adversarial twin together, cross-entropy on the clean
logits plus ``beta`` times the KL divergence of the adversarial prediction from the clean
one, the twin found by maximising that divergence (:func:`trades_attack`, :func:`trades_loss`;
the two halves go through the model as one batch). The attacks work in [0, 1] pixel space,
as the threat model is defined there (an L-inf ball of radius ``eps`` around the image,
clipped to valid pixels); the model's normalisation is applied inside, on the way into the
model, so ``eps = 0.3`` means 0.3 of the pixel range whatever the dataset's mean and std.

Why hand-written here and not the Adversarial Robustness Toolbox, which ``cnnlab robustness``
uses to measure: ``benchmarks/bench_robust_training.py`` (``art_vs_ours``) times one training
batch of PGD both ways, and ART's ``ProjectedGradientDescentPyTorch`` took longer on the
2-core CPU. And training needs
what ART's attacks do not do: they take input gradients with the model in eval mode
(``training_mode=False``: batch norm on its running statistics, not the batch's, as Madry et
al. and Wong et al. train), outside the training step's autocast and device. Here the attack
runs on the batch where it lies, in the model's own mode, under the step's autocast: the
textbook attacks, a few tensor lines each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError

if TYPE_CHECKING:
    from cnnlab.config import AdversarialSettings

__all__ = ["Adversary", "make_adversary", "pgd_accuracy", "pgd_attack", "trades_attack",
           "trades_loss"]

METHODS = ("fgsm-rs", "pgd", "trades")


def _check_attack(eps: float, steps: int, alpha: float, restarts: int = 1) -> None:
    """Raises ConfigError for a radius outside [0, 1], a step size outside (0, 1], fewer than
    one step or restart, or a value that is not finite."""
    for name, value, ok, must in (
        ("eps", eps, 0 <= eps <= 1, "a number in [0, 1] (the L-inf radius on the [0, 1] "
                                    "pixel scale)"),
        ("alpha", alpha, 0 < alpha <= 1, "a number in (0, 1] (the step on the [0, 1] scale)"),
    ):
        if not isinstance(value, int | float) or not math.isfinite(value) or not ok:
            raise ConfigError(f"The '{name}' parameter of the attack must be {must}. "
                              f"Got {value!r} instead.")
    for name, count in (("steps", steps), ("restarts", restarts)):
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ConfigError(f"The '{name}' parameter of the attack must be an integer >= 1. "
                              f"Got {count!r} instead.")


def default_alpha(method: str, eps: float, steps: int) -> float:
    """The step size each method's paper uses: 1.25 eps for FGSM-RS (Wong et al.), 2.5 eps /
    steps for PGD (Madry et al.) and, for the same number of steps, TRADES."""
    return 1.25 * eps if method == "fgsm-rs" else 2.5 * eps / steps


def _norm_constants(mean: float | Sequence[float], std: float | Sequence[float], channels: int,
                    like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    def per_channel(v: float | Sequence[float]) -> torch.Tensor:
        t = torch.as_tensor(v, dtype=like.dtype, device=like.device).reshape(-1)
        return t.expand(channels).reshape(1, channels, 1, 1)

    return per_channel(mean), per_channel(std)


def pgd_attack(model: nn.Module, pixels: torch.Tensor, targets: torch.Tensor, *, eps: float,
               alpha: float, steps: int, mean: float | Sequence[float],
               std: float | Sequence[float], random_start: bool = True,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """L-inf PGD on ``pixels`` (float ``(B, C, H, W)`` on [0, 1]); returns the adversarial
    pixels. ``steps=1`` with ``alpha = 1.25 eps`` and a random start is FGSM-RS.

    The model sees ``(pixels - mean) / std``; it is left in whatever mode it is in (training
    attacks run in train mode, as Madry et al. and Wong et al. do; evaluations in eval mode).
    No parameter gradient is accumulated.

    Raises:
        ConfigError: ``eps``, ``alpha`` or ``steps`` out of range.
    """
    _check_attack(eps, steps, alpha)
    m, s = _norm_constants(mean, std, pixels.shape[1], pixels)
    pixels = pixels.detach()
    if random_start and eps > 0:
        delta = (torch.rand(pixels.shape, generator=generator, device=pixels.device,
                            dtype=pixels.dtype) * 2 - 1) * eps
    else:
        delta = torch.zeros_like(pixels)
    delta = ((pixels + delta).clamp(0, 1) - pixels)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model((pixels + delta - m) / s), targets)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = (delta + alpha * grad.sign()).clamp(-eps, eps)
            delta = (pixels + delta).clamp(0, 1) - pixels
    return (pixels + delta).detach()


def trades_attack(model: nn.Module, pixels: torch.Tensor, *, eps: float, alpha: float,
                  steps: int, mean: float | Sequence[float], std: float | Sequence[float],
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """TRADES's inner maximisation (Zhang et al. 2019): L-inf steps of ``alpha`` that push the
    model's prediction on ``pixels`` (float ``(B, C, H, W)`` on [0, 1]) as far as they can from
    its prediction on the clean image, in KL divergence, from a start 0.001 N(0, 1) away
    (TRADES's own). No label is used. Returns the adversarial pixels; the model's mode is left
    as it is and no parameter gradient is accumulated.

    Raises:
        ConfigError: ``eps``, ``alpha`` or ``steps`` out of range.
    """
    _check_attack(eps, steps, alpha)
    m, s = _norm_constants(mean, std, pixels.shape[1], pixels)
    pixels = pixels.detach()
    with torch.no_grad():
        clean = F.softmax(model((pixels - m) / s).float(), dim=1)
    noise = torch.randn(pixels.shape, generator=generator, device=pixels.device,
                        dtype=pixels.dtype)
    delta = (pixels + 0.001 * noise).clamp(0, 1) - pixels
    for _ in range(steps):
        delta.requires_grad_(True)
        log_adv = F.log_softmax(model((pixels + delta - m) / s).float(), dim=1)
        loss = F.kl_div(log_adv, clean, reduction="sum")
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = (delta + alpha * grad.sign()).clamp(-eps, eps)
            delta = (pixels + delta).clamp(0, 1) - pixels
    return (pixels + delta).detach()


def trades_loss(adv_logits: torch.Tensor, clean_logits: torch.Tensor, beta: float
                ) -> torch.Tensor:
    """TRADES's robustness term: ``beta`` times the KL divergence of the prediction on the
    adversarial images from the prediction on the clean ones, averaged over the batch; the
    training loss adds it to the clean batch's cross-entropy. Gradients flow into both."""
    return beta * F.kl_div(F.log_softmax(adv_logits.float(), dim=1),
                           F.softmax(clean_logits.float(), dim=1), reduction="batchmean")


class Adversary:
    """The training loop's attack component: ``adversary(model, x, y, progress=...)`` takes a
    normalised batch and returns the normalised adversarial batch of the same shape.

    ``progress`` is the epochs done so far (fractional); with ``eps_warmup_epochs`` the radius
    grows linearly from 0 to ``eps`` over them. For ``trades`` the batch is TRADES's
    adversarial twin of the clean one, and the training step adds :meth:`robust_loss` (the
    KL term, weighted by ``beta``) to the clean batch's cross-entropy.
    """

    def __init__(self, method: str, *, eps: float, steps: int, alpha: float,
                 mean: float | Sequence[float], std: float | Sequence[float],
                 eps_warmup_epochs: float = 0.0, beta: float = 6.0) -> None:
        """
        Raises:
            ConfigError: an unknown method, or ``eps``, ``alpha``, ``steps`` or ``beta`` out of
                range.
        """
        if method not in METHODS:
            from cnnlab.errors import unknown_name

            raise ConfigError(unknown_name("adversarial training method", method,
                                           list(METHODS)))
        if eps == 0:
            raise ConfigError("The 'eps' parameter of adversarial training must be > 0 (0 "
                              "trains on clean images). Got 0 instead; set eps in (0, 1], or "
                              "method 'none'.")
        self.method = method
        self.eps = eps
        self.steps = 1 if method == "fgsm-rs" else steps
        self.alpha = alpha or default_alpha(method, eps, self.steps)
        _check_attack(eps, self.steps, min(self.alpha, 1.0))
        self.alpha = min(self.alpha, 1.0)
        if not isinstance(beta, int | float) or not math.isfinite(beta) or beta < 0:
            raise ConfigError(f"The 'beta' parameter of TRADES (the weight of its KL term) "
                              f"must be a finite number >= 0. Got {beta!r} instead.")
        self.mean, self.std = mean, std
        self.eps_warmup_epochs = eps_warmup_epochs
        self.beta = float(beta)

    @property
    def pairs(self) -> bool:
        """Whether the training step needs the clean batch as well (TRADES)."""
        return self.method == "trades"

    def robust_loss(self, adv_logits: torch.Tensor, clean_logits: torch.Tensor
                    ) -> torch.Tensor:
        """TRADES's KL term for one batch (:func:`trades_loss` with this ``beta``)."""
        return trades_loss(adv_logits, clean_logits, self.beta)

    def __repr__(self) -> str:
        extra = f", beta={self.beta:g}" if self.pairs else ""
        return (f"Adversary({self.method!r}, eps={self.eps}, steps={self.steps}, "
                f"alpha={self.alpha:g}{extra})")

    def eps_at(self, progress: float) -> float:
        """The radius after ``progress`` epochs."""
        if self.eps_warmup_epochs <= 0:
            return self.eps
        return self.eps * min(1.0, progress / self.eps_warmup_epochs)

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *,
                 progress: float = math.inf,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        m, s = _norm_constants(self.mean, self.std, x.shape[1], x)
        pixels = (x * s + m).clamp(0, 1)
        eps = self.eps_at(progress)
        if eps <= 0:
            return x
        alpha = self.alpha * eps / self.eps  # the step scales with the warm-up radius
        if self.pairs:
            adv = trades_attack(model, pixels, eps=eps, alpha=alpha, steps=self.steps,
                                mean=self.mean, std=self.std, generator=generator)
        else:
            adv = pgd_attack(model, pixels, targets, eps=eps, alpha=alpha, steps=self.steps,
                             mean=self.mean, std=self.std, generator=generator)
        return (adv - m) / s


def make_adversary(settings: AdversarialSettings, mean: float | Sequence[float],
                   std: float | Sequence[float]) -> Adversary | None:
    """The attack ``settings`` (``train.adversarial``) ask for, or None for ``method = "none"``.

    Raises:
        ConfigError: out-of-range settings.
    """
    if settings.method == "none":
        return None
    return Adversary(settings.method, eps=settings.eps, steps=settings.steps,
                     alpha=settings.alpha, mean=mean, std=std,
                     eps_warmup_epochs=settings.eps_warmup_epochs, beta=settings.beta)


def pgd_accuracy(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, *,
                 mean: float | Sequence[float], std: float | Sequence[float], eps: float,
                 steps: int = 40, alpha: float | None = None, restarts: int = 1,
                 batch_size: int = 500, seed: int = 0,
                 device: torch.device | str = "cpu") -> float:
    """Accuracy of ``model`` (in eval mode) under L-inf PGD with random restarts: an image
    counts as correct only if every restart fails on it.

    ``images`` are uint8 ``(N, C, H, W)``. A quick check of adversarial training, for tests and
    benchmarks; ``cnnlab robustness`` measures with ART (AutoAttack among others).

    Raises:
        ConfigError: ``eps``, ``alpha``, ``steps`` or ``restarts`` out of range.
    """
    alpha = alpha if alpha is not None else 2.5 * eps / steps
    _check_attack(eps, steps, alpha, restarts)
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    correct = 0
    try:
        for i in range(0, len(images), batch_size):
            pixels = images[i:i + batch_size].to(device, torch.float32) / 255
            y = targets[i:i + batch_size].to(device)
            robust = torch.ones(len(y), dtype=torch.bool, device=device)
            m, s = _norm_constants(mean, std, pixels.shape[1], pixels)
            with torch.no_grad():
                robust &= model((pixels - m) / s).argmax(1) == y
            for _ in range(restarts):
                adv = pgd_attack(model, pixels, y, eps=eps, alpha=alpha, steps=steps,
                                 mean=mean, std=std, generator=gen)
                with torch.no_grad():
                    robust &= model((adv - m) / s).argmax(1) == y
            correct += int(robust.sum())
    finally:
        model.train(was_training)
    return correct / max(1, len(images))
