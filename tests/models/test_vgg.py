"""VGG-11/16: torchvision's state_dict layout (checked on the meta device), and small inputs."""

from __future__ import annotations

import pytest
import torch

from cnnlab.errors import ConfigError, ShapeError
from cnnlab.models import create_model
from cnnlab.models.summary import summarize

# torchvision.models.vgg11(num_classes=1000).state_dict(): conv indices and widths
VGG11_CONVS = {0: 64, 3: 128, 6: 256, 8: 256, 11: 512, 13: 512, 16: 512, 18: 512}
VGG16_CONVS = {0: 64, 2: 64, 5: 128, 7: 128, 10: 256, 12: 256, 14: 256, 17: 512, 19: 512,
               21: 512, 24: 512, 26: 512, 28: 512}


def _torchvision_shapes(convs: dict[int, int], num_classes: int = 1000,
                        in_channels: int = 3) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    channels = in_channels
    for index, width in convs.items():
        shapes[f"features.{index}.weight"] = (width, channels, 3, 3)
        shapes[f"features.{index}.bias"] = (width,)
        channels = width
    shapes.update({
        "classifier.0.weight": (4096, 25088), "classifier.0.bias": (4096,),
        "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,),
        "classifier.6.weight": (num_classes, 4096), "classifier.6.bias": (num_classes,),
    })
    return shapes


def _meta(name: str, **kwargs: object) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, **{"in_channels": 3, "num_classes": 1000,
                                     "input_size": 224, **kwargs})


@pytest.mark.parametrize(
    ("name", "convs", "params", "last_pool"),
    [("vgg11", VGG11_CONVS, 132_863_336, 20), ("vgg16", VGG16_CONVS, 138_357_544, 30)],
)
def test_state_dict_equals_torchvision(
    name: str, convs: dict[int, int], params: int, last_pool: int
) -> None:
    model = _meta(name)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = _torchvision_shapes(convs)
    assert shapes == expected
    assert list(shapes) == list(expected)  # same order: features.0.weight ... classifier.6.bias
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.features) == last_pool + 1
    assert isinstance(model.features[last_pool], torch.nn.MaxPool2d)
    assert model.avgpool.output_size == (7, 7)
    assert [type(m).__name__ for m in model.classifier] == [
        "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear",
    ]
    assert not any(getattr(m, "inplace", False) for m in model.modules())
    assert not model.small_input and model.min_size == 32 and not model.fixed_size


def test_in_channels_and_classes_change_only_first_conv_and_head() -> None:
    model = _meta("vgg16", in_channels=1, num_classes=10, input_size=28)
    assert model.small_input and model.min_size == 4
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == _torchvision_shapes(VGG16_CONVS, num_classes=10, in_channels=1)


def test_tiny_variant_runs_at_32x32x3() -> None:
    torch.manual_seed(0)
    model = create_model("vgg-tiny", in_channels=3, num_classes=5, input_size=32).eval()
    assert not model.small_input
    x = torch.randn(1, 3, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (1, 32 * 7 * 7) == (1, model.num_features)
    assert model.forward_head(features, pre_logits=True).shape == (1, 32)
    assert model(x).shape == (1, 5)
    model.reset_classifier(3)
    assert model(x).shape == (1, 3)
    assert set(model.state_dict()) == set(_torchvision_shapes(VGG11_CONVS))


def test_too_small_inputs_give_clear_errors() -> None:
    model = create_model("vgg-tiny", in_channels=3, input_size=32)
    with pytest.raises(ShapeError, match=r"VGG needs inputs of at least 32x32; got 31x40"):
        model(torch.randn(1, 3, 31, 40))
    with pytest.raises(ConfigError, match=r"'vgg11' in the standard layout needs input_size of "
                                          r"at least 32x32; got 16x16.*small_input=True"):
        create_model("vgg11", input_size=16, small_input=False)
    with pytest.raises(ConfigError, match=r"small-input layout needs input_size of at least 4x4"):
        create_model("vgg-tiny", input_size=3)


def test_small_input_layout_keeps_7x7_at_28x28() -> None:
    model = create_model("vgg-tiny")
    assert model.small_input and model.min_size == 4
    shapes = {r.name: r.output_shape for r in summarize(model).layers}
    assert shapes["features.2"] == (4, 14, 14)
    assert shapes["features.5"] == (8, 7, 7)
    assert shapes["features.20"] == (32, 7, 7)
    assert shapes["avgpool"] == (32, 7, 7)


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"'cfg' parameter of model 'vgg11' must be one of "
                                          r"A, B, D, E"):
        create_model("vgg11", cfg="Z")
    with pytest.raises(ConfigError, match=r"'width_mult' .* number > 0"):
        create_model("vgg-tiny", width_mult=0)
    with pytest.raises(ConfigError, match=r"'hidden' .* int >= 1"):
        create_model("vgg-tiny", hidden=0)
    with pytest.raises(ConfigError, match=r"'small_input' .* true, false or None"):
        create_model("vgg-tiny", small_input="yes")
