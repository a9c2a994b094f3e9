"""The small Vision Transformer: tokens, positions, pooling, attention cost, bad settings."""

from __future__ import annotations

import pytest
import torch

from cnnlab.errors import ConfigError
from cnnlab.models import create_model
from cnnlab.models.summary import summarize
from cnnlab.models.vit import ClassToken, ConvStem, LearnedPositions, SinusoidalPositions, ViT


def test_default_mnist_model() -> None:
    model = create_model("vit")
    assert isinstance(model, ViT) and model.fixed_size
    assert (model.config.patch_size, model.config.width, model.config.depth,
            model.config.heads) == (4, 64, 6, 4)
    assert model.num_features == 64 and len(model.blocks) == 6


def test_tokens_positions_and_pooling() -> None:
    x = torch.randn(2, 1, 28, 28)
    cls = create_model("vit-tiny").eval()
    assert isinstance(cls.positions, LearnedPositions) and isinstance(cls.cls_token, ClassToken)
    assert cls.positions.weight.shape == (1, 16, 16)  # (28 / 7) ** 2 patches
    seen: list[torch.Size] = []
    cls.blocks[0].register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    cls(x)
    assert seen == [torch.Size([2, 17, 16])]  # the class token in front
    mean = create_model("vit-tiny", pooling="mean", positions="sinusoidal", width=32).eval()
    assert mean.cls_token is None and isinstance(mean.positions, SinusoidalPositions)
    assert not list(mean.positions.parameters())  # fixed, rebuilt from the config
    assert "positions.table" not in mean.state_dict()
    # mean pooling: permuting the patch tokens after the positions leaves the output alone
    tokens = mean.positions(mean.patch_embed(x).flatten(2).transpose(1, 2))
    pooled = mean.ln_f(mean.blocks(tokens)).mean(1)
    shuffled = mean.ln_f(mean.blocks(tokens[:, torch.randperm(16)])).mean(1)
    torch.testing.assert_close(pooled, shuffled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mean.forward_features(x), pooled)


def test_sinusoidal_positions_differ_per_patch() -> None:
    model = create_model("vit-tiny", positions="sinusoidal", width=16)
    table = model.positions.table[0]  # (16, 16)
    assert torch.cdist(table, table).add(torch.eye(16) * 1e3).min() > 0.1


def test_summary_counts_attention_and_the_token_parameters() -> None:
    model = create_model("vit-tiny")
    s = summarize(model)
    assert s.total_params == sum(layer.params for layer in s.layers)
    attend = [layer for layer in s.layers if layer.type == "Attend"]
    assert len(attend) == 2
    assert all(layer.macs == 2 * 17 * 17 * 16 for layer in attend)  # q k^T and (.) v
    rows = {layer.type: layer for layer in s.layers}
    assert rows["ClassToken"].params == 16 and rows["LearnedPositions"].params == 16 * 16


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"heads": 3}, r"'heads' parameter of model 'vit' must divide 'width' \(64\).*Got 3.*"
                       r"1, 2, 4, 8, 16, 32, 64"),
        ({"patch_size": 5}, r"'patch_size' parameter of model 'vit' must divide the input size "
                            r"28x28.*Got 5.*1, 2, 4, 7, 14, 28"),
        ({"positions": "rope"}, r"'positions' parameter .* 'learned', 'sinusoidal'.*'rope'"),
        ({"pooling": "max"}, r"'pooling' parameter .* 'cls', 'mean'"),
        ({"mlp_ratio": 0}, r"'mlp_ratio' parameter .* \(0, 64\]"),
        ({"depth": 0}, r"'depth' parameter .* int >= 1"),
        ({"width": 30, "heads": 2, "positions": "sinusoidal"}, r"multiple of 4.*width=32"),
        ({"attn_dropout": 1.0}, r"'attn_dropout' parameter .* \[0, 1\)"),
        ({"stem": "cnn"}, r"'stem' parameter .* 'patch', 'conv'"),
        ({"stem": "conv", "patch_size": 7}, r"stem='conv' needs a 'patch_size' that is a power "
                                            r"of 2.*got patch_size=7. Use one of 2, 4,"),
    ],
)
def test_invalid_settings_are_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("vit", **kwargs)


def test_other_sizes_and_channels() -> None:
    model = create_model("vit-tiny", in_channels=3, input_size=(14, 21))
    assert model(torch.randn(2, 3, 14, 21)).shape == (2, 10)
    with pytest.raises(ConfigError, match=r"must divide the input size 30x30"):
        create_model("vit-tiny", input_size=30)


def test_conv_stem_makes_the_same_tokens_from_overlapping_views() -> None:
    x = torch.randn(2, 1, 28, 28)
    model = create_model("vit", stem="conv").eval()
    assert isinstance(model.patch_embed, ConvStem)
    convs = [m for m in model.patch_embed.modules() if isinstance(m, torch.nn.Conv2d)]
    # log2(4) = 2 stride-2 3x3 convs (1 -> 32 -> 64), then the 1x1 to the width
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (1, 32, (3, 3), (2, 2)), (32, 64, (3, 3), (2, 2)), (64, 64, (1, 1), (1, 1))]
    assert model.patch_embed(x).shape == (2, 64, 7, 7)  # 49 tokens, as with 4x4 patches
    assert model(x).shape == (2, 10)
    # a pixel reaches the tokens of two neighbouring patches (the 3x3 views overlap), which
    # a 4x4 patch projection never does
    x2 = x.clone()
    x2[:, :, 3, 3] += 1.0
    changed = (model.patch_embed(x2) - model.patch_embed(x)).abs().sum((0, 1)) > 0
    assert changed.sum() > 1
    patch = create_model("vit").eval()
    changed = (patch.patch_embed(x2) - patch.patch_embed(x)).abs().sum((0, 1)) > 0
    assert changed.sum() == 1
    s = summarize(model)
    assert s.total_params == sum(p.numel() for p in model.parameters())
