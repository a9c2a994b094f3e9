"""AlexNet: torchvision's state_dict layout, and the small-input layout."""

from __future__ import annotations

import pytest
import torch

from cnnlab.errors import ConfigError, ShapeError
from cnnlab.models import Classifier, create_model
from cnnlab.models.summary import summarize

# torchvision.models.alexnet(num_classes=1000).state_dict(): key -> shape
TORCHVISION_ALEXNET = {
    "features.0.weight": (64, 3, 11, 11),
    "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5),
    "features.3.bias": (192,),
    "features.6.weight": (384, 192, 3, 3),
    "features.6.bias": (384,),
    "features.8.weight": (256, 384, 3, 3),
    "features.8.bias": (256,),
    "features.10.weight": (256, 256, 3, 3),
    "features.10.bias": (256,),
    "classifier.1.weight": (4096, 9216),
    "classifier.1.bias": (4096,),
    "classifier.4.weight": (4096, 4096),
    "classifier.4.bias": (4096,),
    "classifier.6.weight": (1000, 4096),
    "classifier.6.bias": (1000,),
}


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def imagenet_alexnet() -> Classifier:
    torch.manual_seed(0)
    return create_model("alexnet", in_channels=3, num_classes=1000, input_size=224).eval()


def test_state_dict_equals_torchvision(imagenet_alexnet: Classifier) -> None:
    assert _shapes(imagenet_alexnet) == TORCHVISION_ALEXNET
    assert list(imagenet_alexnet.state_dict()) == list(TORCHVISION_ALEXNET)  # same order
    assert not imagenet_alexnet.small_input
    assert sum(p.numel() for p in imagenet_alexnet.parameters()) == 61_100_840


def test_runs_at_224x224x3(imagenet_alexnet: Classifier) -> None:
    with torch.no_grad():
        logits = imagenet_alexnet(torch.randn(1, 3, 224, 224))
    assert logits.shape == (1, 1000)
    summary = summarize(imagenet_alexnet)
    shapes = {r.name: r.output_shape for r in summary.layers}
    assert shapes["features.0"] == (64, 55, 55)
    assert shapes["features.12"] == (256, 6, 6)
    assert summary.total_macs == 714_188_480


def test_imagenet_layout_min_size(imagenet_alexnet: Classifier) -> None:
    assert imagenet_alexnet.min_size == 63
    with torch.no_grad():
        assert imagenet_alexnet(torch.randn(1, 3, 63, 63)).shape == (1, 1000)
    with pytest.raises(ShapeError, match=r"AlexNet needs inputs of at least 63x63; got 62x62"):
        imagenet_alexnet(torch.randn(1, 3, 62, 62))


def test_full_alexnet_at_28x28_keeps_keys_and_shapes() -> None:
    model = create_model("alexnet")
    assert model.small_input and model.min_size == 8
    expected = dict(TORCHVISION_ALEXNET)
    expected["features.0.weight"] = (64, 1, 11, 11)
    expected["classifier.6.weight"], expected["classifier.6.bias"] = (10, 4096), (10,)
    assert _shapes(model) == expected
    summary = summarize(model)
    shapes = {r.name: r.output_shape for r in summary.layers}
    assert shapes["features.0"] == (64, 28, 28)
    assert shapes["features.5"] == (192, 7, 7)
    assert shapes["features.12"] == (256, 6, 6)
    assert summary.output_shape == (10,)


def test_weights_load_across_layouts() -> None:
    """The small-input layout changes only parameter-free modules."""
    imagenet = create_model("alexnet-tiny", in_channels=3, num_classes=1000, input_size=224)
    small = create_model("alexnet-tiny", in_channels=3, num_classes=1000, input_size=28)
    assert not imagenet.small_input and small.small_input
    small.load_state_dict(imagenet.state_dict())  # strict
    assert small(torch.randn(2, 3, 28, 28)).shape == (2, 1000)


def test_small_input_can_be_forced() -> None:
    model = create_model("alexnet-tiny", input_size=64, small_input=True)
    assert model.small_input and model.features[0].stride == (1, 1)
    assert not create_model("alexnet-tiny", input_size=64).small_input
    with pytest.raises(ConfigError, match=r"ImageNet layout needs input_size of at least 63x63; "
                                          r"got 28x28\. Use small_input=True"):
        create_model("alexnet-tiny", small_input=False)
    with pytest.raises(ConfigError, match=r"small-input layout needs .* at least 8x8; got 7x7"):
        create_model("alexnet-tiny", input_size=7)


def test_reset_classifier_keeps_the_key() -> None:
    model = create_model("alexnet-tiny")
    model.reset_classifier(5)
    assert _shapes(model)["classifier.6.weight"] == (5, 32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width_mult": 0}, r"'width_mult' parameter .* > 0"),
        ({"hidden": 0}, r"'hidden' parameter .* int >= 1\. Got 0 instead"),
        ({"small_input": "yes"}, r"'small_input' parameter .* true, false or None"),
    ],
)
def test_invalid_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("alexnet-tiny", **kwargs)
