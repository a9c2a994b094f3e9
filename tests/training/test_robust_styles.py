"""--augment robust's digit styles and crops in training: the labels reach the augmentation,
the classes of the digits 1 and 7 are found by name, and a dataset without them is refused."""

import pytest
import torch

from cnnlab.config import resolve_config
from cnnlab.data import ImageDataset
from cnnlab.data.robust import RobustAugment
from cnnlab.errors import ConfigError
from cnnlab.training.data import PreparedData, preprocessing_for
from cnnlab.training.loop import _style_classes, fit
from synth import learnable_images


def _data(classes: list[str]) -> PreparedData:
    images, targets = learnable_images(8, len(classes))
    train = ImageDataset(images, targets, classes, "synthetic", "memory")
    stats = train.stats()
    return PreparedData(train=train, val=train, test=train, classes=classes,
                        mean=tuple(stats.mean), std=tuple(stats.std),
                        preprocessing=preprocessing_for("synthetic", 1, (28, 28)))


def _cfg():
    return resolve_config({
        "model": {"name": "paper-cnn-tiny"},
        "data": {"augment": {"enabled": True, "kind": "robust", "robust_styles": True,
                             "robust_crop": True, "robust_p": 1.0}},
        "train": {"epochs": 1, "batch_size": 16, "seed": 0, "device": "cpu"}})


def test_the_digit_classes_are_found_by_name():
    assert _style_classes(["0", "1", "2", "7"]) == (1, 3)
    assert _style_classes([" 7", "x", "1 "]) == (2, 0)
    with pytest.raises(ConfigError, match="no classes named '1' and '7'"):
        _style_classes(["cat", "dog"])


def test_training_passes_the_labels_to_the_styles(monkeypatch):
    seen: list[torch.Tensor] = []
    call = RobustAugment.__call__

    def spy(self, x, generator=None, targets=None):
        assert self.config.style_classes == (1, 3) and self.config.crop
        seen.append(targets)
        return call(self, x, generator=generator, targets=targets)

    monkeypatch.setattr(RobustAugment, "__call__", spy)
    result = fit(_cfg(), progress=False, data=_data(["0", "1", "2", "7"]))
    assert seen and all(t is not None and t.shape == (16,) for t in seen)
    assert 0 <= result.metrics["test_accuracy"] <= 1


def test_styles_on_a_dataset_without_the_digits_1_and_7_are_refused():
    with pytest.raises(ConfigError, match="robust_styles"):
        fit(_cfg(), progress=False, data=_data(["a", "b", "c", "d"]))
