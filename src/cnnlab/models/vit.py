"""A small Vision Transformer (Dosovitskiy et al. 2021) for small images, trained from scratch.

Read it top to bottom like nanoGPT's ``model.py``: a config dataclass, the attention, the MLP,
the block, then the model. An image is cut into ``patch_size`` x ``patch_size`` patches, each
patch becomes a token of ``width`` numbers, and ``depth`` pre-norm transformer blocks mix the
tokens::

    patches   conv pxp, stride p (C -> width)        (B, width, H/p, W/p) -> (B, T, width)
              or, with stem="conv", log2(p) 3x3 stride-2 convs with BN and ReLU, then a 1x1
              conv (Xiao et al. 2021, "Early convolutions help transformers see better")
    positions + learned or fixed 2-D sinusoidal      (B, T, width)
    [class]   a learned token in front (pooling="cls")  (B, 1 + T, width)
    blocks    depth x (x + attn(ln(x)); x + mlp(ln(x)))
    pool      the class token, or the mean of the patch tokens (pooling="mean")   (B, width)
    head      dropout -> linear                       (B, num_classes)

The convolutional stem makes the same tokens (one per pxp patch) with overlapping 3x3 views
and a few hundred thousand more multiply-accumulates; the rest of the model is unchanged.

The positions fix the number of tokens, so the model is ``fixed_size``; ``patch_size`` must
divide the image's height and width and ``heads`` must divide ``width`` (both checked when the
model is built). The class token and the learned positions live in modules of their own
(:class:`ClassToken`, :class:`LearnedPositions`), so ``cnnlab summary`` counts their
parameters in a row, and the attention product (``softmax(q k^T) v``) is the parameter-free
module :class:`Attend`, which tells the summary its multiply-accumulates.

Grad-CAM (``cnnlab explain``) has no layer to hook here: the tokens are not a ``(C, H, W)``
map, and with the class token the last block's patch tokens do not reach the logits at all.
The registry says ``cam_layer=None``; attention rollout or integrated gradients suit a ViT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.base import (
    Classifier,
    InputSpec,
    build_config,
    check_choice,
    check_dropout,
    check_number,
    check_positive_int,
    default_input_spec,
    new_head,
    register_model,
)

__all__ = ["Attend", "Block", "ClassToken", "ConvStem", "LearnedPositions", "SelfAttention",
           "SinusoidalPositions", "ViT", "ViTConfig", "sinusoidal_positions_2d"]


@dataclass(frozen=True)
class ViTConfig:
    """Hyperparameters of :class:`ViT`; the defaults are the ``vit`` MNIST model."""

    patch_size: int = 4  # side of the square patches; must divide the image height and width
    stem: str = "patch"  # "patch": one pxp conv; "conv": 3x3 stride-2 convs (p a power of 2)
    width: int = 64  # numbers per token (nanoGPT's n_embd)
    depth: int = 6  # transformer blocks (n_layer)
    heads: int = 4  # attention heads (n_head); must divide width
    mlp_ratio: float = 2.0  # the MLP's hidden width is mlp_ratio * width
    positions: str = "learned"  # "learned" embeddings or fixed 2-D "sinusoidal" ones
    pooling: str = "cls"  # "cls": a class token; "mean": the mean of the patch tokens
    attn_dropout: float = 0.0  # on the attention weights
    block_dropout: float = 0.0  # on each residual branch's output
    dropout: float = 0.1  # before the linear head


class Attend(nn.Module):
    """``softmax(q k^T / sqrt(d)) v`` for ``(B, heads, T, d)`` queries, keys and values.

    A module of its own so that the summary can count its work (:meth:`count_macs`)."""

    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.dropout = dropout

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, heads, T, d)

    @staticmethod
    def count_macs(inputs: tuple[Any, ...], output: torch.Tensor) -> int:
        """Per sample: q k^T and (weights) v, each heads x T x T x d."""
        _, heads, tokens, d = inputs[0].shape
        return 2 * heads * tokens * tokens * d


class SelfAttention(nn.Module):
    """Multi-head self-attention: one linear for q, k, v, then the output projection."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.attend = Attend(config.attn_dropout)
        self.proj = nn.Linear(config.width, config.width)
        self.drop = nn.Dropout(config.block_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape  # batch, tokens, width
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, heads, T, C/heads)
        k = k.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, heads, T, C/heads)
        v = v.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, heads, T, C/heads)
        y = self.attend(q, k, v)  # (B, heads, T, C/heads)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again: (B, T, C)
        return self.drop(self.proj(y))  # (B, T, C)


class MLP(nn.Module):
    """Linear -> GELU -> linear, applied to every token on its own."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        hidden = max(1, round(config.mlp_ratio * config.width))
        self.fc = nn.Linear(config.width, hidden)
        self.act = nn.GELU()
        self.proj = nn.Linear(hidden, config.width)
        self.drop = nn.Dropout(config.block_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(self.act(self.fc(x))))  # (B, T, C)


class Block(nn.Module):
    """A pre-norm transformer block: attention, then the MLP, each on a residual path."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.width)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.width)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # (B, T, C)
        return x + self.mlp(self.ln_2(x))  # (B, T, C)


def sinusoidal_positions_2d(rows: int, cols: int, width: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine positions ``(rows * cols, width)``, row-major like the patches.

    A quarter of the width each for sin(row), cos(row), sin(col), cos(col) at geometrically
    spaced frequencies (the 1-D scheme of Vaswani et al. 2017, once per axis). ``width`` must
    be a multiple of 4 (the builder checks it).
    """
    quarter = width // 4
    freq = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / max(1, quarter)))
    r, c = torch.meshgrid(torch.arange(rows, dtype=torch.float32),
                          torch.arange(cols, dtype=torch.float32), indexing="ij")
    r, c = r.reshape(-1, 1) * freq, c.reshape(-1, 1) * freq  # (T, width/4) each
    return torch.cat([r.sin(), r.cos(), c.sin(), c.cos()], dim=1)  # (T, width)


class LearnedPositions(nn.Module):
    """Adds a learned ``(tokens, width)`` embedding to the patch tokens."""

    def __init__(self, tokens: int, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, tokens, width))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight  # (B, T, C)


class SinusoidalPositions(nn.Module):
    """Adds the fixed :func:`sinusoidal_positions_2d` to the patch tokens (no parameters).

    Rebuilt from the config, so not saved in the state dict."""

    table: torch.Tensor

    def __init__(self, rows: int, cols: int, width: int) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_positions_2d(rows, cols, width).unsqueeze(0),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table  # (B, T, C)


class ConvStem(nn.Module):
    """``log2(p)`` 3x3 stride-2 convs with batch norm and ReLU, the channels doubling up to
    ``width``, then a 1x1 conv to ``width``: a ``p``-times smaller map of overlapping views, in
    place of the pxp patch projection (Xiao et al. 2021 call the model ViT_C)."""

    def __init__(self, in_channels: int, width: int, patch_size: int) -> None:
        super().__init__()
        convs = patch_size.bit_length() - 1  # log2(p): each conv halves the side
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(convs):
            c_out = max(1, width >> (convs - 1 - i))  # ..., width / 2, width
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, width, 1))
        self.layers = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation, as a CNN's (torchvision's ResNet), not GPT-2's N(0, 0.02) the
        rest of the ViT has: with batch norm after each conv the weights' scale sets how far
        each of Adam's fixed-size steps turns them, and at 0.02 every step is a large turn."""
        for m in self.layers:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # (B, width, H/p, W/p)


class ClassToken(nn.Module):
    """Puts a learned token in front of the sequence; its final state is what the head reads."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, 1, width))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.weight.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + T, C)


class ViT(Classifier):
    """Patch embedding, positions, ``depth`` transformer blocks, a final layer norm, pooling,
    dropout and a linear head. ``forward_features`` returns the pooled token ``(N, width)``."""

    fixed_size = True

    def __init__(self, input_spec: InputSpec, num_classes: int, config: ViTConfig) -> None:
        super().__init__(input_spec, num_classes)
        self.config = config
        p, w = config.patch_size, config.width
        rows, cols = input_spec.height // p, input_spec.width // p
        self.patch_embed: nn.Module = (nn.Conv2d(input_spec.channels, w, p, stride=p)
                                       if config.stem == "patch"
                                       else ConvStem(input_spec.channels, w, p))
        self.positions: nn.Module = (LearnedPositions(rows * cols, w)
                                     if config.positions == "learned"
                                     else SinusoidalPositions(rows, cols, w))
        self.cls_token = ClassToken(w) if config.pooling == "cls" else None
        self.blocks = nn.Sequential(*(Block(config) for _ in range(config.depth)))
        self.ln_f = nn.LayerNorm(w)
        self.num_features = w
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(w, num_classes)
        self.apply(_init_vit)
        if isinstance(self.patch_embed, ConvStem):
            self.patch_embed.reset_parameters()  # a CNN's initialisation for the conv stem

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, 64, 7, 7) for `vit` at 28x28
        x = x.flatten(2).transpose(1, 2)  # (B, 49, 64): row-major patch tokens
        x = self.positions(x)  # (B, 49, 64)
        if self.cls_token is not None:
            x = self.cls_token(x)  # (B, 50, 64)
        x = self.ln_f(self.blocks(x))  # (B, 50, 64)
        return x[:, 0] if self.cls_token is not None else x.mean(dim=1)  # (B, 64)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(features)  # (B, 64)
        return x if pre_logits else self.head(x)  # (B, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.head = new_head(self.head, num_classes)
        self.num_classes = num_classes


def _init_vit(module: nn.Module) -> None:
    """GPT-2's initialisation, as nanoGPT: linear and patch weights N(0, 0.02), biases 0;
    layer norms keep PyTorch's (weight 1, bias 0)."""
    if isinstance(module, nn.Linear | nn.Conv2d):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _create(name: str, in_channels: int, num_classes: int, input_size: tuple[int, int],
            defaults: ViTConfig, overrides: dict[str, Any]) -> ViT:
    """Validate the config for model ``name`` and build it.

    Raises:
        ConfigError: unknown or invalid options, a patch size that does not divide the image,
            heads that do not divide the width.
    """
    config = build_config(name, defaults, overrides)
    p = check_positive_int(name, "patch_size", config.patch_size)
    width = check_positive_int(name, "width", config.width)
    check_positive_int(name, "depth", config.depth)
    heads = check_positive_int(name, "heads", config.heads)
    check_number(name, "mlp_ratio", config.mlp_ratio, low=0.0, high=64.0, low_open=True)
    check_choice(name, "stem", config.stem, ("patch", "conv"))
    check_choice(name, "positions", config.positions, ("learned", "sinusoidal"))
    check_choice(name, "pooling", config.pooling, ("cls", "mean"))
    for field in ("attn_dropout", "block_dropout", "dropout"):
        check_dropout(name, getattr(config, field), field)
    h, w = input_size
    if h % p or w % p:
        fits = [d for d in range(1, min(h, w) + 1) if h % d == 0 and w % d == 0]
        raise ConfigError(
            f"The 'patch_size' parameter of model {name!r} must divide the input size "
            f"{h}x{w} (patches tile the image). Got {p} instead; sizes that fit: "
            f"{', '.join(map(str, fits))}."
        )
    if config.stem == "conv" and (p < 2 or p & (p - 1)):
        fits = [2**i for i in range(1, min(h, w).bit_length()) if h % 2**i == 0 == w % 2**i]
        raise ConfigError(
            f"model {name!r} with stem='conv' needs a 'patch_size' that is a power of 2 (each "
            f"stride-2 conv halves the side); got patch_size={p}. Use one of "
            f"{', '.join(map(str, fits)) or 'none: the input size is odd'}, or stem='patch'."
        )
    if width % heads:
        fits = [d for d in range(1, width + 1) if width % d == 0]
        raise ConfigError(
            f"The 'heads' parameter of model {name!r} must divide 'width' ({width}): each head "
            f"gets width / heads numbers. Got {heads} instead; heads that fit: "
            f"{', '.join(map(str, fits))}."
        )
    if config.positions == "sinusoidal" and width % 4:
        raise ConfigError(
            f"model {name!r} with positions='sinusoidal' needs a 'width' that is a multiple of "
            f"4 (sin and cos of the row and the column); got width={width}. Use "
            f"width={4 * math.ceil(width / 4)} or positions='learned'."
        )
    return ViT(default_input_spec(in_channels, input_size), num_classes, config)


@register_model("vit", description="Vision Transformer: 4x4 patches, 6 blocks of width 64, "
                                   "4 heads", cam_layer=None)
def vit(in_channels: int, num_classes: int, input_size: tuple[int, int],
        **kwargs: Any) -> ViT:
    """The MNIST default (0.21 M parameters, 11.8 M MACs at 28x28); kwargs are
    :class:`ViTConfig` fields (``patch_size``, ``width``, ``depth``, ``heads``, ...)."""
    return _create("vit", in_channels, num_classes, input_size, ViTConfig(), kwargs)


@register_model("vit-tiny", description="Two-block 16-wide ViT on 7x7 patches for tests",
                tiny=True, cam_layer=None)
def vit_tiny(in_channels: int, num_classes: int, input_size: tuple[int, int],
             **kwargs: Any) -> ViT:
    """16 tokens plus the class token, two blocks of width 16 with two heads, for tests."""
    defaults = ViTConfig(patch_size=7, width=16, depth=2, heads=2)
    return _create("vit-tiny", in_channels, num_classes, input_size, defaults, kwargs)
