"""The model registry: names, keyword arguments and the package's public names."""

from __future__ import annotations

import pytest

import cnnlab.models
from cnnlab.errors import ConfigError, RegistryError
from cnnlab.models import MODELS, Classifier, create_model, list_models
from cnnlab.models.base import IMAGENET_MEAN, MNIST_MEAN, default_input_spec


def test_public_names() -> None:
    assert sorted(cnnlab.models.__all__) == [
        "Classifier", "InputSpec", "MODELS", "create_model", "list_models", "register_model",
    ]
    for name in cnnlab.models.__all__:
        assert hasattr(cnnlab.models, name)


def test_registered_models() -> None:
    assert list_models() == [
        "alexnet", "convnet", "densenet", "efficientnet", "inception", "lenet5", "mobilenet",
        "paper-cnn", "resnet", "vgg11", "vgg16", "vit",
    ]
    assert list_models(include_tiny=True) == [
        "alexnet", "alexnet-tiny", "convnet", "densenet", "densenet-tiny", "efficientnet",
        "efficientnet-tiny", "inception", "inception-tiny", "lenet5", "mobilenet",
        "mobilenet-tiny", "paper-cnn", "paper-cnn-tiny", "resnet", "resnet-tiny", "vgg-tiny",
        "vgg11", "vgg16", "vit", "vit-tiny",
    ]
    for entry in MODELS:
        assert entry.description, entry.name


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(RegistryError, match=r"unknown model 'lenet'; did you mean 'lenet5'"):
        create_model("lenet")
    with pytest.raises(RegistryError, match=r"did you mean 'resnet'.*known: alexnet"):
        create_model("resnt")


def test_unknown_kwarg_is_a_config_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"'paper-cnn'.*unknown keyword argument 'kernel'; "
                                          r"did you mean 'kernel_size'\?"):
        create_model("paper-cnn", kernel=5)
    for name in list_models(include_tiny=True):
        with pytest.raises(ConfigError, match="unknown keyword argument 'colour'"):
            create_model(name, colour="red")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_channels": 0}, "in_channels >= 1"),
        ({"num_classes": 1}, "num_classes >= 2"),
        ({"input_size": (28, 28, 1)}, "input_size must be an int or"),
    ],
)
def test_invalid_common_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("lenet5", **kwargs)


def test_dropout_is_validated_by_every_family() -> None:
    for name in list_models(include_tiny=True):
        with pytest.raises(ConfigError, match=r"'dropout' parameter .* \[0, 1\)\. Got 1\.5"):
            create_model(name, dropout=1.5)


def test_lists_from_toml_become_tuples() -> None:
    model = create_model("paper-cnn-tiny", filters=[4, 8])
    assert model.config.filters == (4, 8)


def test_builders_return_classifiers_with_matching_spec() -> None:
    model = create_model("resnet-tiny", in_channels=3, num_classes=5, input_size=(20, 24))
    assert isinstance(model, Classifier)
    assert model.input_spec.shape == (3, 20, 24)
    assert model.num_classes == 5


def test_default_input_spec() -> None:
    assert default_input_spec(1, (28, 28)).mean == (MNIST_MEAN,)
    assert default_input_spec(3, (224, 224)).mean == IMAGENET_MEAN
    spec = default_input_spec(2, (8, 9))
    assert spec.shape == (2, 8, 9) and spec.std == (0.5, 0.5)
