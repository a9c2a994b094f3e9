"""Adversarial training (fgsm-rs, pgd, trades) and its option errors."""

import re

import pytest
import torch

from cli_helpers import error_line
from cnnlab.cli.main import main
from cnnlab.config import SettingError, flags_layer, resolve_config
from cnnlab.data import ImageDataset
from cnnlab.errors import ConfigError
from cnnlab.training.adversarial import (
    Adversary,
    pgd_accuracy,
    pgd_attack,
    trades_attack,
    trades_loss,
)
from cnnlab.training.data import PreparedData, preprocessing_for
from cnnlab.training.loop import fit


def _features_task(n: int, seed: int) -> ImageDataset:
    """Two classes, each with a robust feature (a white 8x8 square left or right, jittered)
    and a non-robust one (a faint +-0.15 checkerboard whose phase gives the class): a plain
    model uses both, so an eps of 0.2 flips it; an adversarially trained one ignores the
    checkerboard."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.arange(n) % 2
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.1 + 0.15
    rows, cols = torch.arange(28).view(28, 1), torch.arange(28).view(1, 28)
    checker = ((rows + cols) % 2).float() * 2 - 1
    x += 0.15 * checker * (2 * targets.view(n, 1, 1, 1) - 1)
    jitter = torch.randint(-3, 4, (n, 2), generator=g)
    for i in range(n):
        r0 = 10 + int(jitter[i, 0])
        c0 = (4 if targets[i] == 0 else 16) + int(jitter[i, 1])
        x[i, :, r0:r0 + 8, max(0, c0):c0 + 8] = 1.0
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageDataset(images, targets.long(), ["0", "1"], "synthetic", "memory")


def _data() -> PreparedData:
    train = _features_task(96, 0)
    stats = train.stats()
    return PreparedData(train=train, val=_features_task(32, 1), test=_features_task(64, 2),
                        classes=["0", "1"], mean=tuple(stats.mean), std=tuple(stats.std),
                        preprocessing=preprocessing_for("synthetic", 1, (28, 28)))


def _cfg(**adversarial):
    return resolve_config({"model": {"name": "paper-cnn-tiny"},
                           "train": {"epochs": 4, "batch_size": 16, "seed": 0, "device": "cpu",
                                     "adversarial": adversarial},
                           "optim": {"lr": 3e-3}})


@pytest.fixture(scope="module")
def data() -> PreparedData:
    return _data()


@pytest.fixture(scope="module")
def plain(data):
    return fit(_cfg(), progress=False, data=data)


def test_fgsm_rs_training_raises_robust_accuracy_over_plain_training(data, plain):
    def robust_accuracy(model):
        return pgd_accuracy(model, data.test.images, data.test.targets, mean=data.mean,
                            std=data.std, eps=0.2, steps=10)

    defended = fit(_cfg(method="fgsm-rs", eps=0.25), progress=False, data=data)
    assert plain.metrics["test_accuracy"] >= 0.95
    assert defended.metrics["test_accuracy"] >= 0.95
    plain_robust, defended_robust = robust_accuracy(plain.model), robust_accuracy(defended.model)
    assert defended_robust >= plain_robust + 0.3, (plain_robust, defended_robust)


def test_trades_training_raises_robust_accuracy_over_plain_training(data, plain):
    defended = fit(_cfg(method="trades", eps=0.25, steps=3, beta=6.0), progress=False,
                   data=data)
    assert defended.metrics["test_accuracy"] >= 0.95
    plain_robust, defended_robust = (
        pgd_accuracy(m, data.test.images, data.test.targets, mean=data.mean, std=data.std,
                     eps=0.2, steps=10) for m in (plain.model, defended.model))
    assert defended_robust >= plain_robust + 0.3, (plain_robust, defended_robust)


def test_trades_attack_stays_in_the_ball_and_pushes_the_prediction_away(data, plain):
    model = plain.model.eval()
    pixels = data.test.images.float() / 255
    m, s = (torch.tensor(v).view(1, -1, 1, 1) for v in (data.mean, data.std))

    def divergence(adv):
        with torch.no_grad():
            return float(trades_loss(model((adv - m) / s), model((pixels - m) / s), 1.0))

    adv = trades_attack(model, pixels, eps=0.2, alpha=0.05, steps=5, mean=data.mean,
                        std=data.std, generator=torch.Generator().manual_seed(0))
    assert (adv - pixels).abs().max() <= 0.2 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert divergence(pixels) == pytest.approx(0.0, abs=1e-6)
    noise = (pixels + 0.2 * (torch.rand(pixels.shape) * 2 - 1)).clamp(0, 1)
    assert divergence(adv) > 10 * max(divergence(noise), 1e-4)  # far beyond random noise
    logits = torch.randn(8, 3)
    assert float(trades_loss(logits, logits, 6.0)) == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(8, 3)
    assert float(trades_loss(other, logits, 6.0)) == pytest.approx(
        6 * float(trades_loss(other, logits, 1.0)))
    adversary = Adversary("trades", eps=0.3, steps=4, alpha=0.0, mean=0, std=1)
    assert adversary.pairs and adversary.beta == 6.0
    assert adversary.alpha == pytest.approx(2.5 * 0.3 / 4)
    assert not Adversary("pgd", eps=0.3, steps=4, alpha=0.0, mean=0, std=1).pairs


def test_pgd_stays_in_the_ball_and_the_pixel_range_and_lowers_accuracy_with_eps(data, plain):
    model = plain.model
    pixels = data.test.images.float() / 255
    adv = pgd_attack(model, pixels, data.test.targets, eps=0.1, alpha=0.03, steps=5,
                     mean=data.mean, std=data.std, generator=torch.Generator().manual_seed(0))
    assert (adv - pixels).abs().max() <= 0.1 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    accs = [pgd_accuracy(model, data.test.images, data.test.targets, mean=data.mean,
                         std=data.std, eps=eps, steps=10) for eps in (0.05, 0.15, 0.3)]
    assert accs == sorted(accs, reverse=True) and accs[0] > accs[-1], accs
    assert not model.training  # evaluation leaves the mode as it found it


def test_pgd_training_runs_and_its_warm_up_grows_the_radius(data):
    cfg = _cfg(method="pgd", eps=0.2, steps=2, eps_warmup_epochs=1.0)
    result = fit(resolve_config(cfg.to_dict(), {"train": {"epochs": 2}}), progress=False,
                 data=data)
    assert result.metrics["epochs_run"] == 2 and result.metrics["test_accuracy"] >= 0.9
    adversary = Adversary("pgd", eps=0.2, steps=2, alpha=0.0, mean=0.5, std=0.5,
                          eps_warmup_epochs=2.0)
    assert adversary.alpha == pytest.approx(0.25)  # 2.5 eps / steps (Madry et al.)
    assert [adversary.eps_at(p) for p in (0.0, 1.0, 2.0, 3.0)] == pytest.approx(
        [0.0, 0.1, 0.2, 0.2])
    assert Adversary("fgsm-rs", eps=0.2, steps=7, alpha=0.0, mean=0, std=1).steps == 1


@pytest.mark.parametrize(("settings", "key", "expected"), [
    ({"eps": 1.5}, "train.adversarial.eps", "in [0, 1]"),
    ({"eps": -0.1}, "train.adversarial.eps", "in [0, 1]"),
    ({"eps": float("nan")}, "train.adversarial.eps", "finite"),
    ({"alpha": float("inf")}, "train.adversarial.alpha", "finite"),
    ({"steps": 0}, "train.adversarial.steps", "an integer >= 1"),
    ({"beta": -1.0}, "train.adversarial.beta", ">= 0"),
    ({"beta": float("nan")}, "train.adversarial.beta", "finite"),
    ({"method": "pgdd"}, "train.adversarial.method", "one of none, fgsm-rs, pgd"),
])
def test_out_of_range_settings_are_refused_with_the_setting_named(settings, key, expected):
    with pytest.raises(SettingError, match=re.escape(expected)) as e:
        resolve_config({"train": {"adversarial": settings}})
    assert e.value.key == key


def test_library_attack_errors():
    with pytest.raises(ConfigError, match="'eps' parameter of adversarial training must be > 0"):
        Adversary("pgd", eps=0.0, steps=3, alpha=0.0, mean=0, std=1)
    with pytest.raises(ConfigError, match="did you mean 'pgd'"):
        Adversary("pdg", eps=0.3, steps=3, alpha=0.0, mean=0, std=1)
    with pytest.raises(ConfigError, match="'beta' parameter of TRADES"):
        Adversary("trades", eps=0.3, steps=3, alpha=0.0, mean=0, std=1, beta=float("inf"))
    x, y = torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 2))
    for kwargs, match in (({"eps": 1.2}, "'eps' parameter"), ({"steps": 0}, "'steps'"),
                          ({"alpha": float("nan")}, "'alpha' parameter")):
        args = {"eps": 0.3, "alpha": 0.1, "steps": 2, **kwargs}
        with pytest.raises(ConfigError, match=match):
            pgd_attack(model, x, y, mean=0, std=1, **args)
    with pytest.raises(ConfigError, match="'restarts'"):
        pgd_accuracy(model, x.to(torch.uint8), y, mean=0, std=1, eps=0.3, restarts=0)


def test_flags_layer_takes_a_kind_for_augment():
    assert flags_layer({"augment": "robust", "adversarial": "pgd", "eps": 0.1}) == {
        "data": {"augment": {"enabled": True, "kind": "robust"}},
        "train": {"adversarial": {"method": "pgd", "eps": 0.1}}}
    assert flags_layer({"augment": True}) == {"data": {"augment": {"enabled": True}}}
    with pytest.raises(ConfigError, match="did you mean 'robust'"):
        flags_layer({"augment": "robus"})


@pytest.mark.parametrize(("argv", "message"), [
    (["--eps", "2"], "argument --eps: The 'train.adversarial.eps' setting must be in [0, 1]. "
                     "Got 2.0 instead."),
    (["--eps", "nan"], "argument --eps:"),
    (["--steps", "0"], "argument --steps:"),
    (["--alpha", "-1"], "argument --alpha:"),
])
def test_cli_refuses_bad_attack_options(tmp_path, capsys, argv, message):
    assert main(["train", "--model", "paper-cnn-tiny", "--out", str(tmp_path / "r"),
                 "--adversarial", "pgd", *argv]) == 2
    assert message in error_line(capsys)


def test_cli_augment_takes_an_optional_kind(capsys):
    from cnnlab.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "--augment"]).augment is True
    assert parser.parse_args(["train", "--augment", "robust"]).augment == "robust"
    assert parser.parse_args(["train", "--no-augment"]).augment is False
    assert parser.parse_args(["train"]).augment is None
    assert main(["train", "--augment", "robus"]) == 2
    assert "argument --augment: invalid choice: 'robus'" in error_line(capsys)
