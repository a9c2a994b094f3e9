import pytest
import torch

from cnnlab.errors import ConfigError, ShapeError
from cnnlab.models import create_model
from cnnlab.models.summary import summarize


def test_shapes_and_parameters() -> None:
    model = create_model("convnet")
    s = summarize(model)
    # 16*9+2*16 + 32*16*9+2*32 + 64*32*9+2*64 + 3136*10+10
    assert s.total_params == 176 + 4672 + 18560 + 31370
    assert model.forward_features(torch.zeros(3, 1, 28, 28)).shape == (3, 64 * 7 * 7)


def test_flatten_size_follows_the_input_size() -> None:
    model = create_model("convnet", in_channels=3, input_size=(32, 40), num_classes=5)
    assert model(torch.zeros(2, 3, 32, 40)).shape == (2, 5)
    with pytest.raises(ShapeError, match="built for 32x40 inputs"):
        model(torch.zeros(2, 3, 28, 28))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"pools": (True, True)}, "'pools' parameter of model 'convnet' must hold one"),
    ({"widths": (16, 0, 8)}, "'widths' parameter of model 'convnet'"),
    ({"pools": (True,) * 3, "widths": (8, 8, 8)}, None),
])
def test_invalid_options(kwargs, message) -> None:
    if message is None:
        model = create_model("convnet", input_size=8, **kwargs)
        assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 10)
        with pytest.raises(ConfigError, match="pools 3 times, too often for 4x4"):
            create_model("convnet", input_size=4, **kwargs)
        return
    with pytest.raises(ConfigError, match=message):
        create_model("convnet", **kwargs)
