"""Fine-tuning a cnnlab checkpoint on image folders: adaptation, shots, strategies, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.config import resolve_config
from cnnlab.errors import ConfigError, DataError
from cnnlab.training.finetune import (
    FinetuneSettings,
    _epoch_start,
    finetune,
    head_module,
    layer_groups,
)
from cnnlab.training.loop import fit
from synth import write_image_folder

CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small convnet trained on a 3-class folder: the 'MNIST model' of these tests."""
    root = tmp_path_factory.mktemp("src")
    write_image_folder(root / "train", n_per_class=20, num_classes=3, size=16, classes=CLASSES)
    out = root / "run"
    cfg = resolve_config({"model": {"name": "convnet", "width": 4},
                          "data": {"dataset": str(root / "train"), "image_size": 16,
                                   "val_fraction": 0.2},
                          "optim": {"lr": 0.01}, "train": {"epochs": 3, "batch_size": 16,
                                                           "threads": 1}})
    fit(cfg, out_dir=out, progress=False)
    return out


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another dataset of the same classes (other seed, other size, RGB-free)."""
    root = tmp_path_factory.mktemp("target")
    write_image_folder(root, n_per_class=12, num_classes=3, size=20, seed=5, classes=CLASSES)
    return root


def _settings(source: Path, target: Path, out: Path, **kw: object) -> FinetuneSettings:
    base = {"epochs": 3, "threads": 1, "progress": False, "device": "cpu"}
    return FinetuneSettings(source=str(source), train_dir=str(target), out=str(out),
                            **{**base, **kw})  # type: ignore[arg-type]


def test_shots_keep_the_head_and_test_on_the_rest(source: Path, target: Path,
                                                  tmp_path: Path) -> None:
    r = finetune(_settings(source, target, tmp_path / "ft", shots=4))
    assert r.info["head"] == "kept" and r.info["train_images"] == 12
    assert r.info["val_images"] == 0  # 4 per class is too few to hold any back
    assert r.info["test_images"] == 24 and r.metrics["test_images"] == 24
    assert 0 <= r.metrics["test_accuracy"] <= 1
    # the checkpoint loads, keeps the source's normalisation and input, and predicts
    src = cnnlab.load(source)
    model = cnnlab.load(tmp_path / "ft")
    assert model.input_spec == src.input_spec and model.classes == CLASSES
    preds = model.predict(r.test.images[:3])  # type: ignore[union-attr]
    assert len(preds) == 3 and all(p.label in CLASSES for p in preds)
    for name in ("model.pt", "config.toml", "history.csv", "metrics.json", "finetune.json"):
        assert (tmp_path / "ft" / name).is_file()


def test_new_classes_get_a_new_head(source: Path, tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "pets", n_per_class=6, num_classes=2, size=16,
                                classes=["cat", "dog"])
    r = finetune(_settings(source, folder, tmp_path / "ft"))
    assert r.info["head"] == "new" and r.model.num_classes == 2
    assert head_module(r.model).out_features == 2


def test_linear_strategy_changes_only_the_head(source: Path, target: Path,
                                               tmp_path: Path) -> None:
    before = cnnlab.load(source).classifier.state_dict()
    for cache in (True, False):
        r = finetune(_settings(source, target, tmp_path / f"lin{cache}", strategy="linear",
                               feature_cache=cache, epochs=5, augment=None if cache else False))
        after = r.model.state_dict()
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        assert changed == {"fc.weight", "fc.bias"}, (cache, changed)  # BN statistics untouched
        assert r.info["feature_cache"] is cache
    with pytest.raises(ConfigError, match="cannot augment"):
        finetune(_settings(source, target, tmp_path / "x", strategy="linear", augment=True))


def test_cached_and_uncached_linear_agree(source: Path, target: Path, tmp_path: Path) -> None:
    """The feature cache is an optimisation: without augmentation both train the same head."""
    kw = {"strategy": "linear", "epochs": 4, "augment": False, "val_fraction": 0.0}
    a = finetune(_settings(source, target, tmp_path / "a", feature_cache=True, **kw))
    b = finetune(_settings(source, target, tmp_path / "b", feature_cache=False, **kw))
    assert a.metrics["trainable_parameters"] == head_module(a.model).weight.numel() + 3
    # the same batch order, optimiser and schedule: the same head, up to float rounding
    wa, wb = head_module(a.model).weight, head_module(b.model).weight
    assert torch.allclose(wa, wb, atol=1e-5), (wa - wb).abs().max()


def test_gradual_unfreezing_and_discriminative_rates(source: Path, target: Path,
                                                     tmp_path: Path) -> None:
    model = cnnlab.load(source).classifier
    groups = layer_groups(model)
    assert len(groups) == 4  # three conv layers (with their batch norm) and the head
    assert sum(len(g) for g in groups) == len(list(model.parameters()))
    s = _settings(source, target, tmp_path / "g", strategy="gradual", epochs=8)
    start = _epoch_start(s, groups, 8)
    model.train()
    start(0, model)
    assert [all(p.requires_grad for p in g) for g in groups] == [False, False, False, True]
    assert not model.features[0].bn.training  # frozen batch norm keeps its statistics
    start(2, model)
    assert [all(p.requires_grad for p in g) for g in groups] == [False, False, True, True]
    start(7, model)
    assert all(p.requires_grad for p in model.parameters())
    r = finetune(s)
    assert r.metrics["epochs_run"] == 8
    # discriminative: each layer down gets lr * 0.5 more
    from cnnlab.training.finetune import _lr_groups
    from cnnlab.training.optim import make_optimizer

    d = _settings(source, target, tmp_path / "d", strategy="discriminative", lr_decay=0.5)
    opt = make_optimizer(model, resolve_config({"optim": {"lr": 0.1}}).optim,
                         groups=_lr_groups(d, groups)(model))
    rates = sorted({g["lr"] for g in opt.param_groups})
    assert rates == pytest.approx([0.0125, 0.025, 0.05, 0.1])
    assert finetune(d).info["strategy"] == "discriminative"


def test_scratch_baseline(source: Path, target: Path, tmp_path: Path) -> None:
    r = finetune(_settings(source, target, tmp_path / "s", shots=4, scratch=True))
    assert r.info["scratch"] and r.info["head"] == "new"
    with pytest.raises(ConfigError, match=r"scratch=True .* strategy='finetune' only"):
        finetune(_settings(source, target, tmp_path / "s2", scratch=True, strategy="linear"))


def test_bad_inputs(source: Path, target: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no class"):
        finetune(_settings(source, empty, tmp_path / "o1"))
    one = write_image_folder(tmp_path / "one", n_per_class=4, num_classes=1, size=16)
    with pytest.raises(DataError, match="one class"):
        finetune(_settings(source, one, tmp_path / "o2"))
    with pytest.raises(DataError, match=r"The 'shots' setting of finetune \(12\) needs more "
                                        r"than 12 images .*'a' \(12\)"):
        finetune(_settings(source, target, tmp_path / "o3", shots=12))
    broken = write_image_folder(tmp_path / "broken", n_per_class=4, num_classes=2, size=16)
    (broken / "class_0" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"bad\.png"):
        finetune(_settings(source, broken, tmp_path / "o4"))
    other = write_image_folder(tmp_path / "other", n_per_class=3, num_classes=2, size=16)
    with pytest.raises(DataError, match="same class folders"):
        finetune(_settings(source, target, tmp_path / "o5", val_dir=str(other)))
    with pytest.raises(ConfigError, match="The 'shots' setting of finetune must be >= 0"):
        finetune(_settings(source, target, tmp_path / "o6", shots=-1))
    with pytest.raises(ConfigError, match="The 'strategy' setting of finetune must be one of"):
        finetune(_settings(source, target, tmp_path / "o7", strategy="freeze"))
    not_model = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(3)}, not_model)
    with pytest.raises(cnnlab.errors.CnnlabError):
        finetune(_settings(not_model, target, tmp_path / "o8"))
    # an RGB folder is converted to the source's one channel
    rgb = tmp_path / "rgb"
    for c in CLASSES:
        (rgb / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), (40 * i, 200, 10)).save(rgb / c / f"{i}.png")
    r = finetune(_settings(source, rgb, tmp_path / "o9", epochs=1))
    assert r.info["input"] == [1, 16, 16]
    # an existing run is not replaced without overwrite
    with pytest.raises(ConfigError, match="already holds a run"):
        finetune(_settings(source, rgb, tmp_path / "o9", epochs=1))
