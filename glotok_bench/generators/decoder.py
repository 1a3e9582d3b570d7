"""The LlamaGen-style class-conditional causal decoder shared by the AR baseline and FAR.

Sequence layout (T = h * w grid tokens in raster order)::

    input:   [class token, e(x_0), e(x_1), ..., e(x_{T-2})]      L = T
    output:  [h_0,         h_1,    h_2,    ..., h_{T-1}]          h_i predicts x_i

The class token is not rotated; input e(x_i) sits at x_i's grid position. The models
using this decoder choose how a grid position is embedded (one codebook, or two merged)
and how h_i is turned into logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from glotok_bench.generators.layers import (
    Block,
    ClassEmbedding,
    KVCache,
    RMSNorm,
    grid_rope,
    swiglu_hidden,
)


class CausalDecoder(nn.Module):
    """Class token + token embeddings [B, L-1, D] -> hidden states [B, L, D] (normalised)."""

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        heads: int,
        num_classes: int,
        grid_size: tuple[int, int],
        class_dropout: float = 0.1,
        dropout: float = 0.1,
        token_dropout: float = 0.1,
        ffn_multiple_of: int = 256,
        rope_base: float = 10_000.0,
    ):
        super().__init__()
        self.grid_size = grid_size
        self.seq_len = grid_size[0] * grid_size[1]
        self.classes = ClassEmbedding(num_classes, dim, class_dropout)
        self.token_dropout = nn.Dropout(token_dropout)
        hidden = swiglu_hidden(dim, 4.0, ffn_multiple_of)
        self.blocks = nn.ModuleList(
            Block(dim, heads, ffn_hidden=hidden, dropout=dropout, eps=1e-5) for _ in range(depth)
        )
        self.norm = RMSNorm(dim, 1e-5)
        # Position p of the input sequence: p = 0 the class token, p >= 1 token p - 1.
        self.register_buffer(
            "rope", grid_rope(*grid_size, dim // heads, rope_base, prefix=1), persistent=False
        )

    def forward(self, labels: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """labels [B], embeddings [B, L-1, D] of tokens 0..L-2 -> hidden [B, L, D] (teacher forcing)."""
        x = torch.cat([self.classes(labels)[:, None], embeddings], dim=1)
        x = self.token_dropout(x)
        rope = self.rope[: x.shape[1]]
        for block in self.blocks:
            x = block(x, rope, causal=True)
        return self.norm(x)

    # -- incremental decoding ----------------------------------------------------------------

    def new_caches(self) -> list[KVCache]:
        return [KVCache(self.seq_len) for _ in self.blocks]

    def start(self, labels: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
        """Feed the class token: labels [B] -> h_0 [B, 1, D]."""
        return self._step(self.classes(labels)[:, None], 0, caches)

    def step(self, embedding: torch.Tensor, position: int, caches: list[KVCache]) -> torch.Tensor:
        """Feed e(x_{position-1}) [B, 1, D] at sequence position ``position`` -> h_position [B, 1, D]."""
        return self._step(embedding, position, caches)

    def _step(self, x: torch.Tensor, position: int, caches: list[KVCache]) -> torch.Tensor:
        rope = self.rope[position : position + 1]
        for block, cache in zip(self.blocks, caches, strict=True):
            x = block(x, rope, causal=True, cache=cache)
        return self.norm(x)


def autoregress(
    decoder: CausalDecoder,
    labels: torch.Tensor,
    *,
    guided: bool,
    kv_cache: bool,
    embed: Callable[[torch.Tensor], torch.Tensor],
    choose: Callable[[torch.Tensor, int], torch.Tensor],
) -> torch.Tensor:
    """Generate the grid position by position -> LongTensor [B, T, K] (K codebooks per position).

    ``embed(tokens [B', t, K]) -> [B', t, D]`` embeds chosen tokens; ``choose(hidden
    [B', D], i) -> [B, K]`` turns h_i into the tokens of position i (guidance and drawing
    happen there). With ``guided`` the batch is doubled, B' = 2B: rows B.. carry the
    no-class label and the same tokens. Without ``kv_cache`` every step reruns the whole
    prefix (slow; kept to check the cache against).
    """
    batch = labels.shape[0]
    tokens: torch.Tensor | None = None
    if guided:
        labels = torch.cat([labels, decoder.classes.null(labels)])

    def doubled(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, t]) if guided else t

    caches = decoder.new_caches() if kv_cache else None
    for i in range(decoder.seq_len):
        if caches is None:
            if tokens is None:  # only the class token so far
                width = decoder.norm.weight.shape[0]
                prefix = decoder.norm.weight.new_zeros(labels.shape[0], 0, width)
            else:
                prefix = embed(doubled(tokens))
            hidden = decoder(labels, prefix)[:, -1]
        elif tokens is None:
            hidden = decoder.start(labels, caches)[:, -1]
        else:
            hidden = decoder.step(embed(doubled(tokens[:, -1:])), i, caches)[:, -1]
        chosen = choose(hidden, i)
        if chosen.shape[0] != batch:
            raise RuntimeError(f"choose returned {chosen.shape[0]} rows for a batch of {batch}")
        tokens = chosen[:, None] if tokens is None else torch.cat([tokens, chosen[:, None]], dim=1)
    return tokens


def init_llamagen_weights(module: nn.Module, std: float = 0.02) -> None:
    """LlamaGen's initialisation: N(0, std) for every linear and embedding, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
