"""Adversarial robustness, measured with the Adversarial Robustness Toolbox (ART): FGSM, PGD
(L-inf and L2, with random restarts), Square (black-box) and AutoAttack.

Attacks work in [0, 1] pixel space: :class:`PixelSpaceModel` puts the model's normalisation
inside the module that ART differentiates, and the model is in eval mode (batch norm and
dropout as at prediction). The robust accuracy at an epsilon is the accuracy on the images
after the attack; at epsilon 0 it is the clean accuracy.

Gradient-masking checks (Carlini et al. 2019, "On evaluating adversarial robustness"), each
pass or fail:

- ``monotone``: every attack's accuracy falls (or stays) as epsilon grows, within one image;
- ``black_box_not_stronger``: Square, which needs no gradients, never beats the best white-box
  attack on the same images at the same epsilon, within one image.

A failure means the gradients mislead the white-box attacks, so their figures overstate the
robustness.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.errors import ConfigError, unknown_name

__all__ = ["ATTACKS", "AUTOATTACK_VERSIONS", "DEFAULT_EPS_L2", "DEFAULT_EPS_LINF",
           "PixelSpaceModel", "art_classifier", "check_attacks", "check_autoattack_version",
           "check_epsilons", "masking_checks", "run_adversarial"]

log = logging.getLogger("cnnlab")

ATTACKS = ("fgsm", "pgd-linf", "pgd-l2", "square", "autoattack")
#: AutoAttack's versions: ``fast`` (APGD-CE and APGD-DLR at ``autoattack_steps``, Square at the
#: suite's query budget) and ``standard``, Croce & Hein's standard set as far as ART has it
#: (APGD-CE 100 steps, APGD-T on the 9 other classes 100 steps each, Square 5,000 queries;
#: FAB-T, the fourth, is not in ART and rarely fools an image the other three leave)
AUTOATTACK_VERSIONS = ("fast", "standard")
#: images per part of the standard version's Square (progress is reported after each)
SQUARE_CHUNK = 250
DEFAULT_EPS_LINF = (0.0, 0.05, 0.1, 0.2, 0.3)
DEFAULT_EPS_L2 = (0.0, 0.5, 1.0, 2.0, 3.0)


class PixelSpaceModel(nn.Module):
    """A classifier taking float images on [0, 1]: ``classifier((x - mean) / std)``; with
    ``channels_last`` the images go in (and the classifier's weights should be) channels_last."""

    def __init__(self, classifier: nn.Module, mean: Sequence[float], std: Sequence[float],
                 *, channels_last: bool = False) -> None:
        super().__init__()
        self.classifier = classifier
        self.channels_last = channels_last
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(
            1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(
            1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.classifier(x)  # (N, K) logits


def art_classifier(model: Any) -> Any:
    """An ART ``PyTorchClassifier`` over a loaded :class:`~cnnlab.inference.Model`, in eval
    mode, on [0, 1] pixels."""
    from art.estimators.classification import PyTorchClassifier  # type: ignore[import-untyped]

    spec = model.input_spec
    classifier, cpu = model.classifier, model.device.type == "cpu"
    if cpu:
        # oneDNN runs the convs faster on channels_last tensors; a copy, so the loaded model
        # keeps its layout (benchmarks/bench_attack_layout.py: PGD 1.57x and Square 1.41x as
        # fast for the packaged model, 1.0-1.5x for the other families, never slower)
        classifier = copy.deepcopy(classifier).to(memory_format=torch.channels_last)
    wrapped = PixelSpaceModel(classifier, spec.mean, spec.std, channels_last=cpu).eval()
    return PyTorchClassifier(wrapped, loss=nn.CrossEntropyLoss(), input_shape=spec.shape,
                             nb_classes=len(model.classes), clip_values=(0.0, 1.0),
                             device_type="gpu" if model.device.type == "cuda" else "cpu")


def check_attacks(names: Sequence[str]) -> list[str]:
    """``names`` when every one is an attack.

    Raises:
        ConfigError: an unknown name, with the closest known ones.
    """
    for name in names:
        if name not in ATTACKS:
            raise ConfigError(unknown_name("attack", name, ATTACKS))
    return list(names)


def check_epsilons(values: Sequence[float], *, norm: str = "linf",
                   dims: int = 784) -> list[float]:
    """Sorted distinct epsilons, each finite and within the norm's range: [0, 1] for L-inf
    (pixels are on [0, 1]), [0, sqrt(dims)] for L2 (the diameter of the pixel cube).

    Raises:
        ConfigError: an epsilon out of range, not finite, or none at all.
    """
    top = 1.0 if norm == "linf" else math.sqrt(dims)
    out = []
    for v in values:
        try:
            eps = float(v)
        except (TypeError, ValueError):
            eps = math.nan
        if not math.isfinite(eps) or not 0.0 <= eps <= top:
            what = "[0, 1] (pixels are on [0, 1])" if norm == "linf" else \
                f"[0, {top:.4g}] (the L2 diameter of the {dims}-pixel cube)"
            raise ConfigError(f"an {norm.replace('linf', 'L-inf').replace('l2', 'L2')} epsilon "
                              f"must be a number in {what}; got {v!r}")
        out.append(eps)
    if not out:
        raise ConfigError("give at least one epsilon")
    return sorted(set(out))


def _attack(name: str, est: Any, eps: float, *, steps: int, restarts: int, batch_size: int,
            square_queries: int) -> Any:
    from art.attacks.evasion import (  # type: ignore[import-untyped]
        AutoAttack,
        AutoProjectedGradientDescent,
        FastGradientMethod,
        ProjectedGradientDescent,
        SquareAttack,
    )

    if name == "fgsm":
        return FastGradientMethod(est, norm=np.inf, eps=eps, batch_size=batch_size)
    if name in ("pgd-linf", "pgd-l2"):
        norm = np.inf if name == "pgd-linf" else 2
        return ProjectedGradientDescent(est, norm=norm, eps=eps, eps_step=2.5 * eps / steps,
                                        max_iter=steps, num_random_init=restarts,
                                        batch_size=batch_size, verbose=False)
    if name == "square":
        return SquareAttack(est, norm=np.inf, eps=eps, max_iter=square_queries, nb_restarts=1,
                            batch_size=batch_size, verbose=False)
    # AutoAttack (Croce & Hein 2020): APGD on cross-entropy, APGD on the DLR loss, Square;
    # ART runs each on the images the ones before left correctly classified
    attacks = [AutoProjectedGradientDescent(est, norm=np.inf, eps=eps, eps_step=2 * eps,
                                            max_iter=steps, nb_random_init=restarts,
                                            batch_size=batch_size, loss_type=loss,
                                            verbose=False)
               for loss in ("cross_entropy", "difference_logits_ratio")]
    attacks.append(SquareAttack(est, norm=np.inf, eps=eps, max_iter=square_queries,
                                nb_restarts=1, batch_size=batch_size, verbose=False))
    return AutoAttack(est, norm=np.inf, eps=eps, attacks=attacks, batch_size=batch_size)


def _generate(name: str, est: Any, eps: float, x: np.ndarray, y: np.ndarray,
              accuracy: Callable[[np.ndarray, np.ndarray], np.ndarray], *, steps: int,
              restarts: int, batch_size: int, square_queries: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """The adversarial images of one attack at one epsilon and which of them the model still
    reads correctly.

    PGD's random restarts run one at a time, each only on the images every start before it
    left correctly classified: an image counts as robust only if no start fools it, so this
    is the robust accuracy of ``restarts`` starts on every image (what ART's
    ``num_random_init`` computes), at the cost of the survivors alone; on a model without
    adversarial training almost nothing survives the first start at eps 0.1 and above
    (benchmarks/bench_robustness.py times the suite).
    """
    if name not in ("pgd-linf", "pgd-l2") or restarts == 1:
        x_adv = _attack(name, est, eps, steps=steps, restarts=restarts, batch_size=batch_size,
                        square_queries=square_queries).generate(x, y=y)
        return x_adv, accuracy(x_adv, y)
    attack = _attack(name, est, eps, steps=steps, restarts=1, batch_size=batch_size,
                     square_queries=square_queries)
    x_adv = attack.generate(x, y=y)
    hits = accuracy(x_adv, y)
    for _ in range(restarts - 1):
        alive = np.flatnonzero(hits)
        if not len(alive):
            break
        again = attack.generate(x[alive], y=y[alive])
        fooled = ~accuracy(again, y[alive])
        x_adv[alive[fooled]] = again[fooled]
        hits[alive[fooled]] = False
    return x_adv, hits


def _standard_autoattack(est: Any, eps: float, x: np.ndarray, y: np.ndarray,
                         accuracy: Callable[[np.ndarray, np.ndarray], np.ndarray], *,
                         batch_size: int, progress: Callable[[str], None] | None
                         ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Standard AutoAttack (Croce & Hein 2020) without FAB-T: APGD-CE, then APGD-T towards
    each of the other classes in order of their clean logits, then Square, each attack on the
    images every one before it left correctly classified. Returns which images stay correct
    and the accuracy after each attack."""
    from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack

    hits = accuracy(x, y)
    stages: list[dict[str, Any]] = []

    def on_survivors(name: str, attack: Any, labels: np.ndarray, chunk: int = 0) -> None:
        alive = np.flatnonzero(hits)
        if progress is not None:
            progress(f"autoattack (standard) {name} on {len(alive)} images")
        t0 = time.perf_counter()
        step = chunk or max(len(alive), 1)
        for start in range(0, len(alive), step):
            part = alive[start:start + step]
            x_adv = attack.generate(x[part], y=labels[part])
            hits[part[~accuracy(x_adv, y[part])]] = False
            if chunk and progress is not None:
                done = min(start + step, len(alive))
                progress(f"autoattack (standard) {name}: {done} of {len(alive)} images done, "
                         f"accuracy so far {hits.mean():.1%} "
                         f"({time.perf_counter() - t0:.0f} s)")
        stages.append({"attack": name, "accuracy": float(hits.mean()),
                       "seconds": round(time.perf_counter() - t0, 2)})

    def apgd(loss: str, targeted: bool) -> Any:
        return AutoProjectedGradientDescent(est, norm=np.inf, eps=eps, eps_step=2 * eps,
                                            max_iter=100, targeted=targeted, nb_random_init=1,
                                            batch_size=batch_size, loss_type=loss,
                                            verbose=False)

    on_survivors("apgd-ce", apgd("cross_entropy", False), y)
    order = np.argsort(-est.predict(x, batch_size=batch_size), axis=1, kind="stable")
    others = order[order != y[:, None]].reshape(len(y), -1)  # (N, K-1) highest first
    targeted = apgd("difference_logits_ratio", True)
    for k in range(others.shape[1]):
        on_survivors(f"apgd-t target {k + 1}", targeted, others[:, k])
    # Square's 5,000 queries take about an hour for 1,000 survivors on 2 CPU cores: it runs
    # on SQUARE_CHUNK of them at a time (each image's attack is its own), with progress after
    # each part, so a long run shows where it stands
    on_survivors("square", SquareAttack(est, norm=np.inf, eps=eps, max_iter=5000, p_init=0.8,
                                        nb_restarts=1, batch_size=batch_size, verbose=False), y,
                 chunk=SQUARE_CHUNK)
    return hits, stages


def run_adversarial(
    model: Any,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    eps_linf: Sequence[float] = DEFAULT_EPS_LINF,
    eps_l2: Sequence[float] = DEFAULT_EPS_L2,
    attacks: Sequence[str] = ATTACKS,
    steps: int = 10,
    restarts: int = 2,
    black_box_images: int = 200,
    square_queries: int = 300,
    autoattack_images: int = 100,
    autoattack_eps: float = 0.3,
    autoattack_steps: int = 50,
    autoattack_version: str = "fast",
    batch_size: int = 500,
    seed: int = 0,
    examples: int = 8,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Robust accuracy of ``model`` on uint8 model inputs ``images`` under each attack and
    epsilon.

    Square runs on the first ``black_box_images`` images and AutoAttack on the first
    ``autoattack_images`` (they cost the most), at ``autoattack_eps``; the others on all.
    ``autoattack_version`` is ``fast`` or ``standard`` (:data:`AUTOATTACK_VERSIONS`).

    Returns:
        ``{"curves": {attack: {"norm", "images", "eps": [...], "accuracy": [...],
        "seconds"}}, "checks": {...}, "autoattack": {...}, "examples": {...}}``.

    Raises:
        ConfigError: an unknown attack or AutoAttack version, an epsilon out of range, or
            counts below 1.
    """
    check_attacks(attacks)
    check_autoattack_version(autoattack_version)
    dims = int(np.prod(images.shape[1:]))
    eps_linf = check_epsilons(eps_linf, norm="linf")
    eps_l2 = check_epsilons(eps_l2, norm="l2", dims=dims)
    check_epsilons([autoattack_eps], norm="linf")
    for name, value in (("steps", steps), ("restarts", restarts),
                        ("black_box_images", black_box_images),
                        ("square_queries", square_queries),
                        ("autoattack_images", autoattack_images),
                        ("autoattack_steps", autoattack_steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"The {name!r} parameter of run_adversarial must be an int >= 1. "
                              f"Got {value!r} instead.")
    torch.manual_seed(seed)  # the random starts
    np.random.seed(seed)  # ART draws Square's and PGD's randomness from numpy's global state
    est = art_classifier(model)
    x = images.float().numpy() / 255.0
    y = targets.numpy()

    def accuracy(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        return np.asarray(est.predict(xs, batch_size=batch_size).argmax(1) == ys)

    clean_correct = accuracy(x, y)
    curves: dict[str, Any] = {}
    correct: dict[tuple[str, float], np.ndarray] = {}
    adversarial: dict[str, np.ndarray] = {}
    plan = [(a, "linf" if a != "pgd-l2" else "l2") for a in attacks if a != "autoattack"]
    for name, norm in plan:
        grid = eps_linf if norm == "linf" else eps_l2
        n = min(len(x), black_box_images) if name == "square" else len(x)
        t0 = time.perf_counter()
        accs = []
        for eps in grid:
            if progress is not None:
                progress(f"{name} eps {eps:g} on {n} images")
            if eps == 0:
                hits = clean_correct[:n]
            else:
                x_adv, hits = _generate(name, est, eps, x[:n], y[:n], accuracy, steps=steps,
                                        restarts=restarts, batch_size=batch_size,
                                        square_queries=square_queries)
                if name == "pgd-linf":
                    adversarial[f"{eps:g}"] = x_adv[:examples]
            correct[(name, eps)] = hits
            accs.append(float(hits.mean()))
        curves[name] = {"norm": norm, "images": n, "eps": list(grid), "accuracy": accs,
                        "seconds": round(time.perf_counter() - t0, 2)}
    result: dict[str, Any] = {"curves": curves,
                              "settings": {"pgd_steps": steps, "pgd_restarts": restarts,
                                           "square_queries": square_queries,
                                           "black_box_images": min(len(x), black_box_images),
                                           "seed": seed}}
    if "autoattack" in attacks:
        n = min(len(x), autoattack_images)
        if progress is not None:
            progress(f"autoattack eps {autoattack_eps:g} on {n} images")
        t0 = time.perf_counter()
        stages: list[dict[str, Any]] | None = None
        if autoattack_version == "standard":
            hits, stages = _standard_autoattack(est, autoattack_eps, x[:n], y[:n], accuracy,
                                                batch_size=batch_size, progress=progress)
            names, apgd_steps, queries = ["apgd-ce", "apgd-t", "square"], 100, 5000
        else:
            x_adv = _attack("autoattack", est, autoattack_eps, steps=autoattack_steps,
                            restarts=1, batch_size=batch_size, square_queries=square_queries
                            ).generate(x[:n], y=y[:n])
            hits = accuracy(x_adv, y[:n])
            names, apgd_steps, queries = (["apgd-ce", "apgd-dlr", "square"], autoattack_steps,
                                          square_queries)
        result["autoattack"] = {
            "eps": autoattack_eps, "norm": "linf", "images": n, "accuracy": float(hits.mean()),
            "clean_accuracy": float(clean_correct[:n].mean()), "version": autoattack_version,
            "attacks": names, "apgd_steps": apgd_steps,
            "square_queries": queries, "seconds": round(time.perf_counter() - t0, 2),
            "note": (f"{autoattack_version} version, " +
                     (f"on the first {n} of {len(x)} images (AutoAttack costs the most)"
                      if n < len(x) else f"on all {n} images"))}
        if stages is not None:
            result["autoattack"]["stages"] = stages
    result["checks"] = masking_checks(curves, correct, tolerance_images=1)
    result["examples"] = _examples(x, y, est, adversarial, examples, batch_size)
    return result


def check_autoattack_version(version: str) -> None:
    """Raises ConfigError (with a "did you mean") for a version not in
    :data:`AUTOATTACK_VERSIONS`."""
    if version not in AUTOATTACK_VERSIONS:
        raise ConfigError(unknown_name("AutoAttack version", version,
                                       list(AUTOATTACK_VERSIONS)))


def masking_checks(curves: dict[str, Any], correct: dict[tuple[str, float], np.ndarray], *,
                   tolerance_images: int = 1) -> dict[str, Any]:
    """The gradient-masking checks (see the module docstring) on the curves of
    :func:`run_adversarial`."""
    monotone: dict[str, bool] = {}
    for name, c in curves.items():
        slack = tolerance_images / max(c["images"], 1)
        monotone[name] = all(b <= a + slack + 1e-12
                             for a, b in zip(c["accuracy"], c["accuracy"][1:], strict=False))
    out: dict[str, Any] = {"monotone": {"pass": all(monotone.values()), "per_attack": monotone,
                                        "tolerance_images": tolerance_images}}
    if "square" in curves:
        n = curves["square"]["images"]
        rows = []
        for eps, acc in zip(curves["square"]["eps"], curves["square"]["accuracy"], strict=True):
            white = [float(correct[(w, eps)][:n].mean()) for w in ("fgsm", "pgd-linf")
                     if (w, eps) in correct]
            if white and eps > 0:
                rows.append({"eps": eps, "square": acc, "best_white_box": min(white),
                             "pass": acc >= min(white) - tolerance_images / max(n, 1) - 1e-12})
        out["black_box_not_stronger"] = {"pass": all(r["pass"] for r in rows), "per_eps": rows,
                                         "images": n, "tolerance_images": tolerance_images}
    out["pass"] = all(v["pass"] for v in out.values() if isinstance(v, dict))
    return out


def _examples(x: np.ndarray, y: np.ndarray, est: Any, adversarial: dict[str, np.ndarray],
              k: int, batch_size: int) -> dict[str, Any]:
    """The first ``k`` images, clean and under PGD L-inf at each epsilon, with predictions."""
    out: dict[str, Any] = {"targets": y[:k].tolist(),
                           "clean": {"images": x[:k], "predicted":
                                     est.predict(x[:k], batch_size=batch_size).argmax(1).tolist()}}
    for eps, xs in adversarial.items():
        out[eps] = {"images": xs,
                    "predicted": est.predict(xs, batch_size=batch_size).argmax(1).tolist()}
    return out
