"""Single-codebook AR baseline (LlamaGen c2i), so VQ tokenizers share FAR's protocol.

One token per grid position from one codebook; next-token cross-entropy; defaults are
LlamaGen-B (111M with 16384 codes). On a dual tokenizer, ``branch`` picks which
codebook to model (the other is then not generated, so decoding needs a single-branch
tokenizer: this baseline is meant for VQ tokenizers).
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
from glotok_bench.generators.options import CfgSchedule, SamplingOptions, sampling_options
from glotok_bench.generators.sampling import (
    cfg_scale_at,
    evaluating,
    guide,
    make_generator,
    sample_logits,
)
from glotok_bench.generators.tokens import check_grid


def pick_branch(codebook_sizes: Mapping[str, int], branch: str | None, what: str) -> str:
    """The codebook a single-branch model reads: ``branch``, or the only one there is."""
    if branch is None:
        if len(codebook_sizes) != 1:
            raise ConfigError(
                f"{what}: the tokens have codebooks {sorted(codebook_sizes)}; set `branch` to the one to model"
            )
        return next(iter(codebook_sizes))
    if branch not in codebook_sizes:
        raise ConfigError(
            f"{what}: branch {branch!r} is not among the token codebooks {sorted(codebook_sizes)}"
        )
    return branch


class ARGenerator(nn.Module):
    """LlamaGen-style next-token AR over one codebook's indices.

    Batch: ``labels`` [B] and ``indices.<branch>`` [B, h, w]. ``sample`` returns
    ``{branch: LongTensor [B, h, w]}``, ready for ``tokenizer.decode_indices``.
    """

    @attrs.frozen(kw_only=True)
    class Config:
        dim: int = 768
        depth: int = 12
        heads: int = 12
        class_dropout: float = 0.1  # LlamaGen's class-drop rate for CFG
        dropout: float = 0.1  # residual and feed-forward dropout
        token_dropout: float = 0.1
        ffn_multiple_of: int = 256
        rope_base: float = 10_000.0
        init_std: float = 0.02
        # Which codebook to model; None: the token set's only one.
        branch: str | None = None
        # Sampling defaults (SamplingOptions fields left None). Guidance stays off: no
        # paper this baseline stands in for fixes a scale; set generation.cfg_scale.
        cfg_scale: float = 1.0
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
        self.branch = pick_branch(codebook_sizes, config.branch, "ar")
        self.vocab = int(codebook_sizes[self.branch])
        self.grid = check_grid(grid_size)
        self.num_classes = num_classes
        self.embed = nn.Embedding(self.vocab, config.dim)
        self.decoder = CausalDecoder(
            dim=config.dim,
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
        self.output = nn.Linear(config.dim, self.vocab, bias=False)
        init_llamagen_weights(self, config.init_std)
        nn.init.zeros_(self.output.weight)  # uniform first predictions, as LlamaGen

    @property
    def data_keys(self) -> tuple[str, ...]:
        """Token-set keys a training batch needs (besides ``labels``)."""
        return (f"indices.{self.branch}",)

    def logits(self, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """labels [B], indices [B, T] -> logits [B, T, V] (position i predicts indices[:, i])."""
        hidden = self.decoder(labels, self.embed(indices[:, :-1]))
        return self.output(hidden).float()

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token cross-entropy of the batch (a 0-dim tensor)."""
        indices = batch[f"indices.{self.branch}"].flatten(1).long()
        return F.cross_entropy(
            self.logits(batch["labels"], indices).flatten(0, 1), indices.flatten()
        )

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
        """labels [B] -> ``{branch: LongTensor [B, h, w]}``.

        ``options`` (with ``changes`` applied; unset fields from the config): guidance
        doubles the batch (class, then no-class) whenever ``cfg_scale`` != 1, and
        ``cfg_schedule`` "linear" ramps it from 1 at the first token to ``cfg_scale``.
        ``generator`` (else one seeded with ``options.seed``) draws the tokens.
        """
        opts = sampling_options(options, **changes).resolve(self.config)
        labels = labels.to(self.output.weight.device)
        generator = generator or make_generator(opts.seed, labels.device)
        guided = opts.cfg_scale != 1.0
        total = self.decoder.seq_len

        def choose(hidden: torch.Tensor, i: int) -> torch.Tensor:
            logits = self.output(hidden).float()
            if guided:
                scale = cfg_scale_at(i, total, opts.cfg_scale, opts.cfg_schedule)
                logits = guide(*logits.chunk(2), scale)
            draw = sample_logits(
                logits,
                temperature=opts.temperature,
                top_k=opts.top_k,
                top_p=opts.top_p,
                generator=generator,
            )
            return draw[:, None]

        with evaluating(self):
            tokens = autoregress(
                self.decoder,
                labels,
                guided=guided,
                kv_cache=opts.kv_cache,
                embed=lambda t: self.embed(t[..., 0]),
                choose=choose,
            )
        return {self.branch: tokens[..., 0].view(-1, *self.grid)}
