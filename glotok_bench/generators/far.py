"""FAR: factorized autoregression over two codebooks (FQGAN's generator, used by GloTok).

At grid position i the two indices (first = visual, second = semantic by default) are
embedded with their own tables, concatenated and projected to one input vector, so the
sequence stays h * w long. The LlamaGen-style decoder gives h_i; a small causal head
then runs over the two-step sequence [h_i, e_first(x_i^first)]:

    head output 0 -> logits of x_i^first           (from h_i alone)
    head output 1 -> logits of x_i^second          (given h_i and the first index)

The head reuses the first codebook's input embedding for its second step (as FQGAN does).
Loss: the mean of the two cross-entropies. Each codebook has its own vocabulary size,
so GloTok's 4096 semantic + 12288 visual split needs no padding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from glotok_bench.errors import ConfigError
from glotok_bench.generators.decoder import CausalDecoder, autoregress, init_llamagen_weights
from glotok_bench.generators.layers import Block, RMSNorm, swiglu_hidden
from glotok_bench.generators.options import CfgSchedule, SamplingOptions, sampling_options
from glotok_bench.generators.sampling import (
    cfg_scale_at,
    evaluating,
    guide,
    make_generator,
    sample_logits,
)
from glotok_bench.generators.tokens import check_grid


class FARGenerator(nn.Module):
    """Two-codebook factorized AR. Defaults are FAR-B (FQGAN: 24 x 1024, 16 heads, 3 head layers).

    Batch: ``labels`` [B], ``indices.<first>`` and ``indices.<second>`` [B, h, w].
    ``sample`` returns ``{first: [B, h, w], second: [B, h, w]}`` for ``tokenizer.decode_indices``.
    """

    # The views per image its base code trains on (tokens.views = "auto"): FQGAN's
    # train_far_dual.sh extracts codes with --ten-crop --crop-range 1.1.
    token_views = "ten-crop"

    @attrs.frozen(kw_only=True)
    class Config:
        dim: int = 1024
        depth: int = 24
        heads: int = 16
        head_depth: int = 3  # layers of the per-position factorized head
        class_dropout: float = 0.1
        dropout: float = 0.1
        token_dropout: float = 0.1
        ffn_multiple_of: int = 256
        rope_base: float = 10_000.0
        init_std: float = 0.02
        # Prediction order inside a position: the first branch is predicted from h_i alone.
        first: str = "visual"
        second: str = "semantic"
        # Sampling defaults (SamplingOptions fields left None): FQGAN evaluates FAR with
        # constant guidance 2.0 on both indices (its eval_far.sh, generate_dual.py).
        cfg_scale: float = 2.0
        cfg_schedule: CfgSchedule = "constant"

    def __init__(
        self,
        config: Config,
        *,
        codebook_sizes: Mapping[str, int],
        grid_size: int | Sequence[int],
        num_classes: int,
        channels: int | None = None,
    ):
        super().__init__()
        self.config = config
        for branch in (config.first, config.second):
            if branch not in codebook_sizes:
                raise ConfigError(
                    f"far: branch {branch!r} is not among the token codebooks {sorted(codebook_sizes)}; "
                    "FAR needs a two-codebook tokenizer (set `first`/`second` to its branch names)"
                )
        if config.first == config.second:
            raise ConfigError("far: `first` and `second` must name two different codebooks")
        self.branches = (config.first, config.second)
        self.vocab = (int(codebook_sizes[config.first]), int(codebook_sizes[config.second]))
        self.grid = check_grid(grid_size)
        self.num_classes = num_classes
        dim = config.dim
        self.embed_first = nn.Embedding(self.vocab[0], dim)
        self.embed_second = nn.Embedding(self.vocab[1], dim)
        self.merge = nn.Linear(2 * dim, dim)
        self.decoder = CausalDecoder(
            dim=dim,
            depth=config.depth,
            heads=config.heads,
            num_classes=num_classes,
            grid_size=self.grid,
            class_dropout=config.class_dropout,
            dropout=config.dropout,
            token_dropout=config.token_dropout,
            ffn_multiple_of=config.ffn_multiple_of,
            rope_base=config.rope_base,
        )
        hidden = swiglu_hidden(dim, 4.0, config.ffn_multiple_of)
        # No rotary positions in the head: with two causal steps the order is implied.
        self.head = nn.ModuleList(
            Block(dim, config.heads, ffn_hidden=hidden, dropout=config.dropout, eps=1e-5)
            for _ in range(config.head_depth)
        )
        self.head_norm = RMSNorm(dim, 1e-5)
        self.out_first = nn.Linear(dim, self.vocab[0], bias=False)
        self.out_second = nn.Linear(dim, self.vocab[1], bias=False)
        init_llamagen_weights(self, config.init_std)
        nn.init.zeros_(self.out_first.weight)
        nn.init.zeros_(self.out_second.weight)

    @property
    def data_keys(self) -> tuple[str, ...]:
        return tuple(f"indices.{b}" for b in self.branches)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T, 2] (first, second) -> one input vector per position [B, T, D]."""
        both = torch.cat(
            [self.embed_first(tokens[..., 0]), self.embed_second(tokens[..., 1])], dim=-1
        )
        return self.merge(both)

    def run_head(self, hidden: torch.Tensor, first: torch.Tensor | None = None) -> torch.Tensor:
        """hidden [N, D] (+ first indices [N]) -> head outputs [N, 1 or 2, D], normalised."""
        x = hidden[:, None]
        if first is not None:
            x = torch.cat([x, self.embed_first(first)[:, None]], dim=1)
        for block in self.head:
            x = block(x, causal=True)
        return self.head_norm(x)

    def logits(
        self, labels: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """labels [B], tokens [B, T, 2] -> (first logits [B, T, V1], second logits [B, T, V2])."""
        batch, length, _ = tokens.shape
        hidden = self.decoder(labels, self.embed(tokens[:, :-1]))
        head = self.run_head(hidden.reshape(batch * length, -1), tokens[..., 0].reshape(-1))
        first = self.out_first(head[:, 0]).float().view(batch, length, -1)
        second = self.out_second(head[:, 1]).float().view(batch, length, -1)
        return first, second

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Mean of the two codebooks' cross-entropies (a 0-dim tensor)."""
        tokens = torch.stack([batch[key].flatten(1).long() for key in self.data_keys], dim=-1)
        first, second = self.logits(batch["labels"], tokens)
        loss_first = F.cross_entropy(first.flatten(0, 1), tokens[..., 0].flatten())
        loss_second = F.cross_entropy(second.flatten(0, 1), tokens[..., 1].flatten())
        return (loss_first + loss_second) / 2

    def loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self(batch)

    @torch.no_grad()
    def sample(
        self,
        labels: torch.Tensor,
        options: SamplingOptions | None = None,
        *,
        generator: torch.Generator | None = None,
        **changes: Any,
    ) -> dict[str, torch.Tensor]:
        """labels [B] -> ``{first: LongTensor [B, h, w], second: LongTensor [B, h, w]}``.

        ``options`` (with ``changes`` applied; unset fields from the config). Guidance
        (batch doubled with no-class rows when ``cfg_scale`` != 1) is applied to both the
        first and the second index's logits; the second index's no-class row is
        conditioned on the same (guided) first index.
        """
        opts = sampling_options(options, **changes).resolve(self.config)
        labels = labels.to(self.out_first.weight.device)
        generator = generator or make_generator(opts.seed, labels.device)
        guided = opts.cfg_scale != 1.0
        total = self.decoder.seq_len
        draw = dict(
            temperature=opts.temperature, top_k=opts.top_k, top_p=opts.top_p, generator=generator
        )

        def choose(hidden: torch.Tensor, i: int) -> torch.Tensor:
            scale = cfg_scale_at(i, total, opts.cfg_scale, opts.cfg_schedule)
            logits = self.out_first(self.run_head(hidden)[:, 0]).float()
            if guided:
                logits = guide(*logits.chunk(2), scale)
            first = sample_logits(logits, **draw)
            logits = self.out_second(
                self.run_head(hidden, torch.cat([first, first]) if guided else first)[:, 1]
            ).float()
            if guided:
                logits = guide(*logits.chunk(2), scale)
            return torch.stack([first, sample_logits(logits, **draw)], dim=-1)

        with evaluating(self):
            tokens = autoregress(
                self.decoder,
                labels,
                guided=guided,
                kv_cache=opts.kv_cache,
                embed=self.embed,
                choose=choose,
            )
        grids = tokens.view(labels.shape[0], *self.grid, 2)
        return {self.branches[0]: grids[..., 0], self.branches[1]: grids[..., 1]}
