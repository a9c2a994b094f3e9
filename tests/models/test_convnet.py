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


def test_default_keeps_the_fast_recipe_layout() -> None:
    """The checkpoint keys of the default model are those of the fast recipe's convnet."""
    keys = set(create_model("convnet").state_dict())
    assert {"features.0.conv.weight", "features.0.bn.running_mean", "features.2.conv.weight",
            "fc.weight"} <= keys
    assert not any("shortcut" in k for k in keys)


@pytest.mark.parametrize(("depth", "per_stage"), [(4, (1, 1, 1)), (5, (1, 1, 2)),
                                                  (10, (3, 3, 3)), (15, (4, 5, 5))])
def test_depth_counts_weighted_layers(depth: int, per_stage: tuple[int, ...]) -> None:
    from cnnlab.models.convnet import convs_for_depth

    assert convs_for_depth(depth, 3) == per_stage
    model = create_model("convnet", depth=depth, kernel_size=5)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) + 1 == depth and all(c.kernel_size == (5, 5) for c in convs)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_width_residual_and_batch_norm() -> None:
    model = create_model("convnet", width=8, depth=6, residual=True, batch_norm=False)
    assert model.config.widths == (8, 16, 32)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    blocks = list(model.features)
    assert blocks[0].shortcut is None  # the stem has no skip
    # a 1x1 projection where the width changes, the identity elsewhere
    assert isinstance(blocks[1].shortcut, torch.nn.Conv2d)
    assert isinstance(blocks[2].shortcut, torch.nn.Identity)
    assert all(b.conv.bias is not None for b in blocks)
    x = torch.randn(2, 1, 28, 28)
    assert model(x).shape == (2, 10)
    # the skip is really added: zeroing the conv leaves pool(ReLU(x)) for an identity block
    block = blocks[2]  # stage 2's second conv, the stage's last: it pools
    with torch.no_grad():
        block.conv.weight.zero_()
        block.conv.bias.zero_()
    h = torch.randn(1, 16, 14, 14)
    assert torch.equal(block(h), torch.nn.functional.max_pool2d(torch.relu(h), 2))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"depth": 3}, "'depth' parameter of a 3-stage convnet must be an int >= 4"),
    ({"width": 0}, "'width' parameter of model 'convnet' must be an int >= 1"),
    ({"width": 8, "widths": (8, 16)}, "got both 'width' and 'widths'"),
    ({"residual": "yes"}, "'residual' parameter of model 'convnet' must be true or false"),
])
def test_invalid_search_knobs(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("convnet", **kwargs)


def test_pool_first_pools_before_bn_and_relu() -> None:
    plain, first = create_model("convnet"), create_model("convnet", pool_first=True)
    assert summarize(first).total_params == summarize(plain).total_params  # the same weights
    first.load_state_dict(plain.state_dict())
    x = torch.randn(4, 1, 28, 28)
    assert first(x).shape == (4, 10)
    stem_plain, stem_first = plain.features[0].eval(), first.features[0].eval()
    conv = stem_first.conv(x)
    pooled = torch.nn.functional.max_pool2d(conv, 2)
    assert torch.allclose(stem_first(x), torch.relu(stem_first.bn(pooled)))
    assert stem_first.pool_first and not stem_plain.pool_first
    assert not first.features[2].pool_first  # the last stage does not pool: nothing moves
    with pytest.raises(ConfigError, match="'pool_first' parameter of model 'convnet'"):
        create_model("convnet", pool_first="yes")
    # with skips the shortcut is pooled alike
    res = create_model("convnet", width=8, depth=6, residual=True, pool_first=True)
    assert res(x).shape == (4, 10)


def test_crop_sees_only_the_centred_square() -> None:
    model = create_model("convnet", crop=24).eval()
    assert model.num_features == 64 * 6 * 6  # 24 -> 12 -> 6
    assert summarize(model).total_macs < 0.8 * summarize(create_model("convnet")).total_macs
    x = torch.rand(3, 1, 28, 28)
    y = model(x)
    assert y.shape == (3, 10)
    border = x.clone()
    border[:, :, :2], border[:, :, -2:], border[:, :, :, :2], border[:, :, :, -2:] = 1, 1, 1, 1
    assert torch.equal(model(border), y)  # the 2-pixel border is not seen
    inside = x.clone()
    inside[:, :, 2, 2] += 1.0  # the crop's top-left pixel is
    assert not torch.allclose(model(inside), y)
    # an odd margin keeps the extra row and column at the bottom right
    assert create_model("convnet", crop=23).crop_box == (2, 2, 23)


@pytest.mark.parametrize(("crop", "message"), [
    (29, "at most the input's smaller side"),
    (-1, "int >= 0"),
    (24.0, "int >= 0"),
    (True, "int >= 0"),
])
def test_invalid_crop(crop, message) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("convnet", crop=crop)
