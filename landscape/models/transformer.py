"""A small Transformer encoder over image patches (Vaswani et al. 2017; Dosovitskiy et al. 2021),
with and without its residual stream.

Each block has two sublayers, multi-head self-attention and a two-layer GELU MLP. In the
pre-LN form (Xiong et al. 2020; GPT-2) the *residual stream* is an identity path through the
whole net that the sublayers only add to, ``x ← x + f(LN(x))``: He et al.'s shortcut applied
to attention. Three variants share one module tree, so two of them differ in one thing:

- ``transformer-<depth>``: pre-LN, ``x ← x + Attn(LN₁(x))``, ``x ← x + MLP(LN₂(x))``;
- ``transformer-<depth>-noresidual``: the same sublayers without the adds,
  ``x ← Attn(LN₁(x))``, ``x ← MLP(LN₂(x))``: a stack of attention layers, which loses rank
  doubly exponentially with depth (Dong et al. 2021);
- ``transformer-<depth>-postln``: the original placement, ``x ← LN₁(x + Attn(x))``,
  ``x ← LN₂(x + MLP(x))``; the stream is renormalized after each add, so the identity path is
  no longer clean (Xiong et al. 2020: it needs learning-rate warm-up).

Tokens come from the image: 8×8 images (digits) are read as 8 row tokens of 8·C pixels, larger
ones as 4×4 patches (CIFAR 32×32: 64 tokens of 48 values) when the size allows, rows
otherwise; ``patch=k`` asks for k×k patches. A learned positional embedding is added, the
final LN'd tokens are mean-pooled into a linear head. Attention is written out (q, k, v and
output ``nn.Linear`` + softmax) instead of ``nn.MultiheadAttention``, whose fused kernel
``torch.fx`` (BN folding, model keys), ``torch.vmap`` over weights and ONNX export see as one
opaque op. With the defaults (``d_model=64``, 4 heads, MLP 4×) transformer-6 has 0.30 M
parameters, about ResNet-20's 0.27 M, and transformer-18 0.90 M, about ResNet-56's 0.85 M.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import SpecError
from landscape.models.registry import register_model

Stream = Literal["pre", "none", "post"]
DEPTHS = (6, 18)
VARIANTS: dict[str, Stream] = {"": "pre", "-noresidual": "none", "-postln": "post"}
# Bounds of the model arguments (``register_model``); d_model as the MLPs' width.
ARG_RANGES = {"d_model": (1, 1024), "heads": (1, 64), "mlp_ratio": (1, 16), "patch": (0, 64)}


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention, one ``Linear`` per projection."""

    def __init__(self, d_model: int, heads: int, tokens: int) -> None:
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(d_model, d_model) for _ in range(3))
        self.out = nn.Linear(d_model, d_model)
        self.heads, self.tokens, self.d_model = heads, tokens, d_model
        self.scale = 1.0 / math.sqrt(d_model // heads)

    def _split(self, x: Tensor) -> Tensor:  # (B, T, d) → (B, heads, T, d / heads)
        return x.reshape(-1, self.tokens, self.heads, self.d_model // self.heads).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        weights = torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)
        mixed = (weights @ v).transpose(1, 2).reshape(-1, self.tokens, self.d_model)
        out: Tensor = self.out(mixed)
        return out


class FeedForward(nn.Module):
    """Linear → GELU → Linear, ``mlp_ratio × d_model`` hidden units."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, hidden)
        self.fc2 = nn.Linear(hidden, d_model)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc2(F.gelu(self.fc1(x)))
        return out


class Block(nn.Module):
    """Attention then MLP, each with its LayerNorm; ``stream`` says where the adds go."""

    def __init__(self, d_model: int, heads: int, hidden: int, tokens: int, stream: Stream) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads, tokens)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = FeedForward(d_model, hidden)
        self.stream = stream

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor
        if self.stream == "pre":
            x = x + self.attn(self.norm1(x))
            out = x + self.mlp(self.norm2(x))
        elif self.stream == "post":
            x = self.norm1(x + self.attn(x))
            out = self.norm2(x + self.mlp(x))
        else:
            out = self.mlp(self.norm2(self.attn(self.norm1(x))))
        return out


def patch_shape(in_channels: int, image_size: int, patch: int) -> tuple[int, int]:
    """(patch height, patch width): rows for small images, 4×4 where it divides, or k×k."""
    if patch:
        if image_size % patch:
            raise SpecError(f"patch {patch} does not divide the image size {image_size}")
        return patch, patch
    if image_size >= 16 and image_size % 4 == 0:
        return 4, 4
    return 1, image_size


class ImageTransformer(nn.Module):
    """Patches → linear embedding + learned positions → ``depth`` blocks → LN → mean → Linear."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        image_size: int,
        depth: int,
        stream: Stream,
        d_model: int = 64,
        heads: int = 4,
        mlp_ratio: int = 4,
        patch: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("d_model", d_model), ("heads", heads), ("mlp_ratio", mlp_ratio)):
            if not isinstance(value, int) or value < 1:
                raise SpecError(f"transformer {name} must be an integer >= 1, got {value!r}")
        if d_model % heads:
            raise SpecError(f"d_model ({d_model}) must be a multiple of heads ({heads})")
        self.channels, self.size = in_channels, image_size
        self.patch = patch_shape(in_channels, image_size, patch)
        ph, pw = self.patch
        self.tokens = (image_size // ph) * (image_size // pw)
        self.embed = nn.Linear(in_channels * ph * pw, d_model)
        self.position = nn.Parameter(torch.zeros(self.tokens, d_model))
        self.blocks = nn.Sequential(
            *(Block(d_model, heads, mlp_ratio * d_model, self.tokens, stream) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)
        # GPT-2 / ViT initialization: N(0, 0.02) weights, zero biases; the projections that
        # write into the stream scaled by 1/√(2·depth) so its variance stays bounded. The
        # same for every variant: a seed gives all three the same weights.
        nn.init.normal_(self.position, std=0.02)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = 0.02 / math.sqrt(2 * depth) if name.endswith(("attn.out", "fc2")) else 0.02
                nn.init.normal_(module.weight, std=std)
                nn.init.zeros_(module.bias)

    def tokenize(self, x: Tensor) -> Tensor:
        """(B, C, H, W) → (B, tokens, C·ph·pw), row-major over patches."""
        ph, pw = self.patch
        c, n_h, n_w = self.channels, self.size // ph, self.size // pw
        x = x.reshape(-1, c, n_h, ph, n_w, pw).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(-1, self.tokens, c * ph * pw)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(self.tokenize(x)) + self.position
        h = self.norm(self.blocks(h))
        logits: Tensor = self.head(h.mean(dim=1))
        return logits


def _register(depth: int, suffix: str, stream: Stream) -> None:
    what = {
        "pre": f"pre-LN Transformer encoder, {depth} blocks, on image patches (Vaswani et al. "
        f"2017; d_model, heads, mlp_ratio, patch); plain twin transformer-{depth}-noresidual",
        "none": f"transformer-{depth} without the residual adds: the plain twin of "
        f"transformer-{depth} and transformer-{depth}-postln",
        "post": f"transformer-{depth} with post-LN blocks, LN(x + f(x)) (Vaswani et al. 2017); "
        f"plain twin transformer-{depth}-noresidual",
    }[stream]

    @register_model(f"transformer-{depth}{suffix}", what, arg_ranges=ARG_RANGES)
    def builder(
        *,
        in_channels: int,
        num_classes: int,
        image_size: int,
        d_model: int = 64,
        heads: int = 4,
        mlp_ratio: int = 4,
        patch: int = 0,
    ) -> nn.Module:
        return ImageTransformer(
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=image_size,
            depth=depth,
            stream=stream,
            d_model=d_model,
            heads=heads,
            mlp_ratio=mlp_ratio,
            patch=patch,
        )


for _depth in DEPTHS:
    for _suffix, _stream in VARIANTS.items():
        _register(_depth, _suffix, _stream)
