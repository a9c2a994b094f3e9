"""Adversarial: ART's attacks on a tiny model in [0, 1] pixel space; accuracy falls with
epsilon; epsilons outside the range are refused; the gradient-masking checks can fail."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from cnnlab.errors import ConfigError
from cnnlab.robustness.adversarial import (
    PixelSpaceModel,
    art_classifier,
    check_attacks,
    check_epsilons,
    masking_checks,
    run_adversarial,
)


def test_the_wrapper_applies_the_models_normalisation(bar_model) -> None:
    model, images, _ = bar_model
    spec = model.input_spec
    wrapped = PixelSpaceModel(model.classifier, spec.mean, spec.std).eval()
    with torch.no_grad():
        ours = wrapped(images[:8].float() / 255)
    # what predict computes from the same uint8 images
    torch.testing.assert_close(ours, model.logits(images[:8]), rtol=1e-4, atol=1e-4)


def test_the_attacks_model_is_a_channels_last_copy_on_the_cpu(bar_model) -> None:
    model, images, _ = bar_model
    est = art_classifier(model)
    wrapped = est.model
    assert wrapped.channels_last and wrapped.classifier is not model.classifier
    convs = [m for m in wrapped.classifier.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[-1].in_channels > 1  # (a 1-channel weight is both layouts at once)
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    own = [m for m in model.classifier.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert own.weight.is_contiguous()  # the loaded model keeps its own layout
    x = images[:8].float().numpy() / 255
    # the same logits as the model's own predict
    np.testing.assert_allclose(est.predict(x), model.logits(images[:8]).numpy(), rtol=1e-4,
                               atol=1e-4)
    grads = est.loss_gradient(x, np.eye(4, dtype=np.float32)[np.zeros(8, dtype=int)])
    assert grads.shape == x.shape and np.abs(grads).sum() > 0


def test_accuracy_under_attack_falls_with_epsilon(bar_model) -> None:
    model, images, targets = bar_model
    result = run_adversarial(model, images, targets, eps_linf=[0, 0.05, 0.2, 0.5],
                             eps_l2=[0, 2.0, 6.0], attacks=["fgsm", "pgd-linf", "pgd-l2"],
                             steps=5, restarts=1, batch_size=64, examples=2)
    clean = result["curves"]["pgd-linf"]["accuracy"][0]
    assert clean >= 0.9
    for name, curve in result["curves"].items():
        acc = curve["accuracy"]
        assert acc[-1] < acc[0] - 0.3, (name, acc)
        assert all(b <= a + 1 / curve["images"] for a, b in itertools.pairwise(acc))
    assert result["checks"]["monotone"]["pass"]
    # PGD is at least as strong as one FGSM step
    for f, p in zip(result["curves"]["fgsm"]["accuracy"],
                    result["curves"]["pgd-linf"]["accuracy"], strict=True):
        assert p <= f + 1 / len(targets)
    assert result["examples"]["clean"]["images"].shape == (2, 1, 28, 28)


def test_restarts_attack_only_the_survivors_and_never_raise_accuracy(bar_model,
                                                                    monkeypatch) -> None:
    from art.attacks.evasion import ProjectedGradientDescent

    model, images, targets = bar_model
    sizes: list[int] = []
    generate = ProjectedGradientDescent.generate

    def spy(self, x, y=None, **kwargs):
        assert self.num_random_init == 1  # one start per call
        sizes.append(len(x))
        return generate(self, x, y=y, **kwargs)

    monkeypatch.setattr(ProjectedGradientDescent, "generate", spy)
    kw = {"eps_linf": [0, 0.2], "eps_l2": [0], "attacks": ["pgd-linf"], "steps": 3,
          "batch_size": 64, "examples": 2}
    one = run_adversarial(model, images, targets, restarts=1, **kw)
    assert sizes == [len(targets)]
    sizes.clear()
    three = run_adversarial(model, images, targets, restarts=3, **kw)
    acc1 = one["curves"]["pgd-linf"]["accuracy"][1]
    acc3 = three["curves"]["pgd-linf"]["accuracy"][1]
    assert 0 < acc1 < 1  # some survive the first start, so the restarts have work
    # the first start is the same draw; each later one runs on the images still read right
    assert sizes[0] == len(targets) and round(acc1 * len(targets)) == sizes[1]
    assert 2 <= len(sizes) <= 3 and all(b <= a for a, b in itertools.pairwise(sizes))
    assert acc3 <= acc1


def test_square_and_autoattack_run_on_fewer_images(bar_model) -> None:
    model, images, targets = bar_model
    result = run_adversarial(model, images, targets, eps_linf=[0, 0.3], eps_l2=[0],
                             attacks=["pgd-linf", "square", "autoattack"], steps=3,
                             restarts=1, black_box_images=12, square_queries=20,
                             autoattack_images=8, autoattack_steps=3, batch_size=64)
    assert result["curves"]["square"]["images"] == 12
    aa = result["autoattack"]
    assert aa["images"] == 8 and "first 8 of 40" in aa["note"]
    assert 0.0 <= aa["accuracy"] <= aa["clean_accuracy"]
    assert "black_box_not_stronger" in result["checks"]


def test_standard_autoattack_runs_each_attack_on_the_survivors(bar_model, monkeypatch) -> None:
    from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack

    model, images, targets = bar_model
    queries: list[int] = []
    sizes: list[int] = []
    square_init, apgd_generate = SquareAttack.__init__, AutoProjectedGradientDescent.generate

    def quick_square(self, *args, max_iter=100, **kwargs):  # the published 5,000, cut for time
        queries.append(max_iter)
        square_init(self, *args, max_iter=40, **kwargs)

    def counted(self, x, y=None, **kwargs):
        sizes.append(len(x))
        return apgd_generate(self, x, y=y, **kwargs)

    monkeypatch.setattr(SquareAttack, "__init__", quick_square)
    monkeypatch.setattr(AutoProjectedGradientDescent, "generate", counted)
    kw = {"eps_linf": [0], "eps_l2": [0], "attacks": ["autoattack"], "autoattack_images": 12,
          "autoattack_eps": 0.15, "batch_size": 64}
    monkeypatch.setattr("cnnlab.robustness.adversarial.SQUARE_CHUNK", 5)
    said: list[str] = []
    result = run_adversarial(model, images, targets, autoattack_version="standard",
                             progress=said.append, **kw)
    aa = result["autoattack"]
    assert aa["version"] == "standard" and aa["apgd_steps"] == 100 and queries == [5000]
    assert aa["square_queries"] == 5000 and "standard version" in aa["note"]
    names = [s["attack"] for s in aa["stages"]]
    classes = len(model.classes)
    assert names == ["apgd-ce", *(f"apgd-t target {k}" for k in range(1, classes)), "square"]
    accs = [aa["clean_accuracy"], *(s["accuracy"] for s in aa["stages"])]
    assert all(b <= a for a, b in itertools.pairwise(accs))  # an image never comes back
    assert aa["accuracy"] == accs[-1] < aa["clean_accuracy"]
    # each attack gets only the images every attack before it left correct
    alive = [round(a * 12) for a in accs]
    assert sizes == [n for n in alive[:classes] if n]
    # Square goes through its survivors in parts of SQUARE_CHUNK, saying where it stands
    parts = [m for m in said if "square:" in m]
    left = alive[classes]
    assert len(parts) == -(-left // 5) and f"{left} of {left} images done" in parts[-1]
    fast = run_adversarial(model, images, targets, **kw)["autoattack"]
    assert fast["version"] == "fast" and "stages" not in fast
    with pytest.raises(ConfigError, match="did you mean 'standard'"):
        run_adversarial(model, images, targets, autoattack_version="standrd", **kw)


def test_masking_checks_fail_when_they_should() -> None:
    curves = {"pgd-linf": {"images": 10, "eps": [0, 0.1, 0.3], "accuracy": [1.0, 0.2, 0.6]},
              "square": {"images": 10, "eps": [0, 0.1, 0.3], "accuracy": [1.0, 0.1, 0.1]}}
    correct = {("pgd-linf", 0.1): np.array([1, 1] + [0] * 8, bool),
               ("pgd-linf", 0.3): np.array([1] * 6 + [0] * 4, bool)}
    checks = masking_checks(curves, correct)
    assert not checks["monotone"]["per_attack"]["pgd-linf"]
    assert checks["monotone"]["per_attack"]["square"]
    assert not checks["black_box_not_stronger"]["pass"] and not checks["pass"]


@pytest.mark.parametrize("eps", [-0.1, 1.5, float("nan"), float("inf"), "x"])
def test_linf_epsilon_outside_0_1_is_refused(eps: object) -> None:
    with pytest.raises(ConfigError, match=r"L-inf epsilon must be a number in \[0, 1\]"):
        check_epsilons([0.1, eps], norm="linf")  # type: ignore[list-item]


def test_l2_epsilons_and_attack_names() -> None:
    assert check_epsilons([3, 0, 1], norm="l2") == [0.0, 1.0, 3.0]
    with pytest.raises(ConfigError, match="L2 epsilon"):
        check_epsilons([29.0], norm="l2", dims=784)
    with pytest.raises(ConfigError, match="unknown attack 'pgd'; did you mean"):
        check_attacks(["pgd"])
