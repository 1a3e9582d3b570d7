"""Quantizer adapters: what maps encoder features to one branch's code vectors.

``conv1x1`` is a single 1x1 convolution (LlamaGen's ``quant_conv``). ``transformer`` is
FQGAN's dual-encoder head, the topology GloTok's Sec. 3.2 follows ("two adapters decompose
Z"): on the shared encoder trunk each branch runs its own small pre-LN transformer (a
learned positional embedding for a fixed token grid, ``depth`` blocks of multi-head
self-attention + GELU MLP), then its own GroupNorm-SiLU-3x3 conv to ``head_channels`` and a
1x1 conv to the code dimension. Pair it with the autoencoder's ``encoder_output = "trunk"``
so that the trunk ends at the middle block, as FQGAN's does.

The ``fqgan-dual`` checkpoint loader maps FQGAN's weights onto these very modules.
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from glotok_bench.errors import ConfigError


@attrs.frozen(kw_only=True)
class AdapterConfig:
    kind: Literal["conv1x1", "transformer"] = "conv1x1"
    # transformer only (defaults: FQGAN's VQ-16 heads at 256 px):
    depth: int = 6
    heads: int = 8
    mlp_ratio: float = 4.0
    grid_size: int = 16  # tokens per side; the positional embedding is learned for this grid
    head_channels: int = 256  # width of the per-branch 3x3 conv (FQGAN: the z channels)
    norm_groups: int = 32

    def token_grid(self) -> int | None:
        """The token grid side this adapter is built for, or None when any grid will do."""
        return self.grid_size if self.kind == "transformer" else None


class TransformerBlock(nn.Module):
    """Pre-LN residual block: x + attn(ln_1(x)); x + mlp(ln_2(x)). Tokens [B, L, width]."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TransformerAdapter(nn.Module):
    """Features [B, width, g, g] -> [B, width, g, g] through a small transformer over the g*g tokens."""

    def __init__(self, width: int, *, depth: int, heads: int, mlp_ratio: float, grid_size: int):
        super().__init__()
        self.grid_size = grid_size
        self.positional_embedding = nn.Parameter(width**-0.5 * torch.randn(grid_size**2, width))
        self.ln_pre = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(TransformerBlock(width, heads, mlp_ratio) for _ in range(depth))
        self.ln_post = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if h * w != self.positional_embedding.shape[0]:
            raise ValueError(
                f"the transformer adapter has a positional embedding for a {self.grid_size}x"
                f"{self.grid_size} token grid, got {h}x{w}: are the images at the tokenizer's resolution?"
            )
        tokens = x.flatten(2).transpose(1, 2) + self.positional_embedding.to(x.dtype)
        tokens = self.ln_pre(tokens)
        for block in self.blocks:
            tokens = block(tokens)
        return self.ln_post(tokens).transpose(1, 2).reshape(b, c, h, w)


class TransformerBranchHead(nn.Module):
    """One branch's head on the shared trunk: transformer, norm, 3x3 conv, 1x1 conv to the codes."""

    def __init__(self, config: AdapterConfig, *, in_channels: int, code_dim: int):
        super().__init__()
        self.transformer = TransformerAdapter(
            in_channels, depth=config.depth, heads=config.heads, mlp_ratio=config.mlp_ratio,
            grid_size=config.grid_size,
        )
        # gcd keeps GroupNorm valid for narrow CPU-sized trunks, as in the conv autoencoder.
        self.norm = nn.GroupNorm(math.gcd(in_channels, config.norm_groups), in_channels, eps=1e-6)
        self.conv_out = nn.Conv2d(in_channels, config.head_channels, 3, padding=1)
        self.project = nn.Conv2d(config.head_channels, code_dim, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = self.transformer(features)
        return self.project(self.conv_out(F.silu(self.norm(h))))


def build_adapter(config: AdapterConfig, *, in_channels: int, code_dim: int) -> nn.Module:
    """The adapter of one branch: encoder features [B, in_channels, h, w] -> [B, code_dim, h, w]."""
    if config.kind == "conv1x1":
        return nn.Conv2d(in_channels, code_dim, 1)
    problems = []
    if config.depth < 0 or config.heads < 1 or config.grid_size < 1 or config.head_channels < 1:
        problems.append("depth >= 0, heads >= 1, grid_size >= 1 and head_channels >= 1 are required")
    if config.mlp_ratio <= 0:
        problems.append(f"mlp_ratio must be positive, got {config.mlp_ratio}")
    if config.heads >= 1 and in_channels % config.heads:
        problems.append(f"the encoder width {in_channels} is not divisible by heads = {config.heads}")
    if problems:
        raise ConfigError("quantizer adapter (transformer): " + "; ".join(problems))
    return TransformerBranchHead(config, in_channels=in_channels, code_dim=code_dim)
