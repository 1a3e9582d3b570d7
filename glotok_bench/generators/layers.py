"""Transformer building blocks shared by every generator (AR, FAR, xAR).

Shapes: B batch, L tokens in this call, S keys (cached + new), D model width, H heads,
Dh = D / H. Every block is pre-norm with RMSNorm and a SwiGLU feed-forward (Llama), with
2-D rotary positions on the token grid. The KV cache lives outside the modules (one
:class:`KVCache` per layer, owned by whoever samples), so a module never carries state
from one sampling call into the next.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """x / rms(x) (computed in fp32), times a learned gain unless ``affine`` is False.

    xAR's blocks use it without a gain because adaLN supplies the scale.
    """

    def __init__(self, dim: int, eps: float = 1e-6, *, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        out = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
        return out if self.weight is None else out * self.weight


def swiglu_hidden(dim: int, ratio: float = 4.0, multiple_of: int = 1) -> int:
    """Hidden width of a SwiGLU with the parameter count of a ``ratio * dim`` GELU MLP.

    Two thirds of ``ratio * dim`` (three matrices instead of two), rounded up to
    ``multiple_of``: LlamaGen/FAR round to 256, xAR does not round.
    """
    hidden = int(2 * ratio * dim / 3)
    return multiple_of * math.ceil(hidden / multiple_of)


GateActivation = Literal["silu", "gelu"]


class SwiGLU(nn.Module):
    """w_down(act(w_gate x) * w_up x): [B, L, D] -> [B, L, D].

    ``activation`` "silu" is SwiGLU (Llama, LlamaGen, FAR); "gelu" is GEGLU, which xAR
    gets from timm's ``SwiGLU`` built with ``act_layer=nn.GELU``. ``dropout`` acts on the
    output; ``hidden_dropout`` on the gated product before ``w_down`` (timm drops both).
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        *,
        bias: bool = False,
        dropout: float = 0.0,
        hidden_dropout: float = 0.0,
        activation: GateActivation = "silu",
    ):
        super().__init__()
        if activation not in ("silu", "gelu"):
            raise ValueError(f"unknown gate activation {activation!r}; use 'silu' or 'gelu'")
        self.activation = F.silu if activation == "silu" else F.gelu
        self.w_gate = nn.Linear(dim, hidden, bias=bias)
        self.w_up = nn.Linear(dim, hidden, bias=bias)
        self.w_down = nn.Linear(hidden, dim, bias=bias)
        self.hidden_dropout = nn.Dropout(hidden_dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated = self.hidden_dropout(self.activation(self.w_gate(x)) * self.w_up(x))
        return self.dropout(self.w_down(gated))


# -- rotary positions ----------------------------------------------------------------------


def rope_table(
    rows: torch.Tensor, cols: torch.Tensor, head_dim: int, base: float = 10_000.0
) -> torch.Tensor:
    """Rotation angles for tokens at grid positions (rows[i], cols[i]): [L, Dh / 2].

    2-D rotary embedding: the first half of the rotated pairs turns with the row index,
    the second half with the column index, so attention scores depend on the 2-D offset
    between tokens. A token given angle 0 everywhere (the class token) is not rotated.
    """
    if head_dim % 4:
        raise ValueError(f"2-D rotary positions need a head width divisible by 4, got {head_dim}")
    quarter = head_dim // 4
    freqs = base ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
    angles = torch.cat([rows.double()[:, None] * freqs, cols.double()[:, None] * freqs], dim=1)
    return angles.float()


def grid_rope(
    height: int, width: int, head_dim: int, base: float = 10_000.0, *, prefix: int = 0
) -> torch.Tensor:
    """Angles [prefix + height * width, Dh / 2] for ``prefix`` unrotated tokens then a raster grid."""
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    table = rope_table(rows, cols, head_dim, base)
    return torch.cat([torch.zeros(prefix, table.shape[1]), table])


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of channels of x [B, H, L, Dh] by angles [L, Dh / 2] (fp32 math)."""
    pairs = x.float().unflatten(-1, (-1, 2))
    cos, sin = angles.cos(), angles.sin()
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2).type_as(x)


# -- attention -----------------------------------------------------------------------------


class KVCache:
    """Keys and values one attention layer has seen, [B, H, capacity, Dh], filled in order.

    Allocated on first use with the dtype the layer produces (bf16 under autocast).
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.length = 0
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def extend(
        self, k: torch.Tensor, v: torch.Tensor, *, store: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values for [cached tokens, these tokens]; ``store`` keeps these for later calls.

        xAR passes ``store=False`` while it integrates a cell, whose noisy states must not
        become context; the finished cell is then stored with one more call.
        """
        if self.keys is None:
            shape = (k.shape[0], k.shape[1], self.capacity, k.shape[3])
            self.keys = k.new_zeros(shape)
            self.values = v.new_zeros(shape)
        end = self.length + k.shape[2]
        if not store:
            return (
                torch.cat([self.keys[:, :, : self.length], k], dim=2),
                torch.cat([self.values[:, :, : self.length], v], dim=2),
            )
        if end > self.capacity:
            raise RuntimeError(f"KV cache overflow: {end} tokens > capacity {self.capacity}")
        self.keys[:, :, self.length : end] = k
        self.values[:, :, self.length : end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


def causal_mask(queries: int, keys: int, device: torch.device | None = None) -> torch.Tensor:
    """Bool [queries, keys]: query i (the last ``queries`` of ``keys`` positions) sees keys <= it."""
    offset = keys - queries
    q = torch.arange(queries, device=device)[:, None] + offset
    return torch.arange(keys, device=device)[None, :] <= q


class Attention(nn.Module):
    """Multi-head self-attention with rotary positions and an optional KV cache.

    ``dropout`` acts on the output projection, ``attn_dropout`` on the attention
    probabilities (xAR uses both, at 0.1); neither acts outside training.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        bias: bool = False,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        store: bool = True,
    ) -> torch.Tensor:
        """x [B, L, D] -> [B, L, D].

        ``rope``: angles [L, Dh/2] for these tokens. ``mask``: bool [L, S], True = may
        attend. ``causal``: each token sees itself and earlier ones (cached tokens are
        earlier). With neither, every token sees every key (cached + new).
        """
        batch, length, dim = x.shape
        q, k, v = (
            self.qkv(x).view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        if cache is not None:
            k, v = cache.extend(k, v, store=store)
        keys = k.shape[2]
        is_causal = False
        if causal and mask is None:
            if keys == length:
                is_causal = True  # the fused kernel's own mask: no tensor to build
            elif length > 1:
                mask = causal_mask(length, keys, x.device)
            # one query after its cache sees every key: no mask needed
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=is_causal,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        return self.dropout(self.proj(out.transpose(1, 2).reshape(batch, length, dim)))


class Block(nn.Module):
    """Pre-norm transformer block; with ``adaptive`` its norms are modulated by a condition.

    Adaptive (adaLN, DiT/xAR): a condition vector per group of tokens [B, G, D] gives
    shift, scale and gate for both sub-layers; ``groups`` [L] names each token's group.
    The modulation is computed once per group and then gathered, because computing a
    D x 6D projection per token would cost about as much as the block itself.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        ffn_hidden: int,
        bias: bool = False,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        ffn_hidden_dropout: float = 0.0,
        activation: GateActivation = "silu",
        adaptive: bool = False,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.attn_norm = RMSNorm(dim, eps, affine=not adaptive)
        self.attn = Attention(dim, heads, bias=bias, dropout=dropout, attn_dropout=attn_dropout)
        self.ffn_norm = RMSNorm(dim, eps, affine=not adaptive)
        self.ffn = SwiGLU(
            dim,
            ffn_hidden,
            bias=bias,
            dropout=dropout,
            hidden_dropout=ffn_hidden_dropout,
            activation=activation,
        )
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim)) if adaptive else None

    def forward(
        self,
        x: torch.Tensor,
        rope: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        store: bool = True,
        condition: torch.Tensor | None = None,
        groups: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, L, D] -> [B, L, D]; see :meth:`Attention.forward` for the attention arguments."""
        attend = dict(mask=mask, causal=causal, cache=cache, store=store)
        if self.modulation is None:
            x = x + self.attn(self.attn_norm(x), rope, **attend)
            return x + self.ffn(self.ffn_norm(x))
        if condition is None:
            raise ValueError("an adaptive block needs a condition [B, G, D]")
        mod = self.modulation(condition)
        if groups is not None:
            mod = mod[:, groups]
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
        x = x + gate1 * self.attn(self.attn_norm(x) * (1 + scale1) + shift1, rope, **attend)
        return x + gate2 * self.ffn(self.ffn_norm(x) * (1 + scale2) + shift2)


# -- conditioning --------------------------------------------------------------------------


class ClassEmbedding(nn.Module):
    """Class label [B] -> [B, D]. Row ``num_classes`` is the "no class" token for CFG.

    In training, labels are replaced by the no-class token with probability ``dropout``
    so the same network also learns the unconditional model classifier-free guidance uses.
    The row exists even with ``dropout`` 0, so every checkpoint can be sampled with CFG
    arguments (a never-trained row just gives meaningless guidance).
    """

    def __init__(self, num_classes: int, dim: int, dropout: float = 0.1):
        super().__init__()
        self.num_classes = num_classes
        self.dropout = dropout
        self.table = nn.Embedding(num_classes + 1, dim)

    def null(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.full_like(labels, self.num_classes)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        if self.training and self.dropout > 0:
            drop = torch.rand(labels.shape, device=labels.device) < self.dropout
            labels = torch.where(drop, self.null(labels), labels)
        return self.table(labels)


class TimeEmbedding(nn.Module):
    """Flow time t in [0, 1] [B, ...] -> [B, ..., D]: sinusoids of 1000 t, then a 2-layer MLP."""

    def __init__(self, dim: int, frequencies: int = 256, max_period: float = 10_000.0):
        super().__init__()
        self.frequencies = frequencies
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequencies // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, device=t.device) / half)
        # Scaled by 1000 so the sinusoids span the range DiT-style embeddings were tuned for.
        args = (1000.0 * t.float())[..., None] * freqs
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1).to(self.mlp[0].weight.dtype))
