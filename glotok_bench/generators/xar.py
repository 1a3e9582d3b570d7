"""xAR: next-X prediction with flow matching on continuous (quantized) features.

The h x w feature grid (GloTok: 16 channels = 8 semantic + 8 visual) is split into
cells of ``cell_size`` x ``cell_size`` tokens; the sequence is the cells in raster order,
each cell's tokens in raster order. Training (Noisy Context Learning): every cell is
noised with its own flow time t_c, and the network, under a block-causal mask (a token
sees every token of its own and earlier cells), predicts each cell's velocity. Class and
time enter through adaLN: condition_c = class embedding + time embedding(t_c), shared by
the tokens of cell c. Loss: mean squared velocity error.

Sampling goes cell by cell: the cell starts from noise and is integrated with the
Euler(-Maruyama) sampler while attending to the finished cells (clean, t = 0); guidance
ramps per cell from 1 to ``cfg_scale``, and the flow steps go from ``steps_first`` to
``steps_last`` (equal in xAR's own evaluation). With the KV cache a finished cell is run
once more at t = 0 to store its keys/values; without it every evaluation reruns the
whole prefix.

Defaults are xAR-B as xAR's code builds it (``models/xar.py``, ``main_mar.py``): 8
encoder + 8 decoder blocks of width 768, 12 heads (172M); GEGLU feed-forward; learned
absolute positions added to the encoder and decoder inputs besides the 2-D RoPE; an
RMSNorm after the input projection (``z_proj_ln``); a norm and a linear map between
encoder and decoder (``encoder_norm``, ``decoder_embed``); xavier init with the adaLN
projections left random; dropout 0.1 on attention probabilities and projections. Each
is an option (``mlp``, ``learned_positions``, ``input_norm``, ``encoder_decoder``,
``adaln_zero``, ``attn_dropout``/``dropout``): the simpler single-stack DiT-style form
(SwiGLU, RoPE only, adaLN-zero, no dropout) is what this project used before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from glotok_bench.errors import ConfigError
from glotok_bench.generators.flow import (
    TimeSampling,
    integrate,
    interpolate,
    sample_times,
    steps_for_cell,
)
from glotok_bench.generators.layers import (
    Block,
    ClassEmbedding,
    KVCache,
    RMSNorm,
    TimeEmbedding,
    rope_table,
    swiglu_hidden,
)
from glotok_bench.generators.options import (
    CfgSchedule,
    Integrator,
    SamplingOptions,
    sampling_options,
)
from glotok_bench.generators.sampling import (
    cfg_scale_at,
    evaluating,
    guide,
    make_generator,
)
from glotok_bench.generators.tokens import check_grid


class XARGenerator(nn.Module):
    """Block-causal flow-matching transformer over cells of continuous features.

    Batch: ``labels`` [B] and ``<features>`` [B, C, h, w] (``with_residual`` or
    ``quantized``). ``sample`` returns latents [B, C, h, w] for ``tokenizer.decode``.
    """

    # The views per image its base code trains on (tokens.views = "auto"): xAR trains on
    # MAR's cached latents of each image and its mirror (util/loader.py).
    token_views = "flip"

    @attrs.frozen(kw_only=True)
    class Config:
        dim: int = 768
        depth: int = 16
        heads: int = 12
        mlp_ratio: float = 4.0
        cell_size: int = 8  # 8x8 cells: 4 prediction steps on a 16x16 grid
        class_dropout: float = 0.1
        # xAR's main_mar.py: proj_dropout 0.1 (attention output, both MLP dropouts) and
        # attn_dropout 0.1 (attention probabilities).
        dropout: float = 0.1
        attn_dropout: float = 0.1
        rope_base: float = 10_000.0
        # Architecture details of xAR's models/xar.py (see the module docstring).
        mlp: Literal["geglu", "swiglu"] = "geglu"
        learned_positions: bool = True
        input_norm: bool = True
        encoder_decoder: bool = True  # depth // 2 encoder blocks, then norm + linear
        adaln_zero: bool = False
        # Which stored features to learn and generate. The paper (Sec. 3.4) says "features
        # obtained after vector quantization", which Eq. 11-12 leave open: "with_residual"
        # (Z_hat + Z_res) is what the tokenizer's decoder was trained on, so it is the
        # default; "quantized" (the bare codes) gets the residual heads applied before
        # decoding (generate.py does that for this setting).
        features: Literal["with_residual", "quantized"] = "with_residual"
        # Standardise each channel with statistics of the training features, so the data
        # matches the N(0, 1) noise scale (the codes are unit vectors: per-channel std ~0.35).
        normalize: bool = True
        time_sampling: TimeSampling = "logit_normal"
        time_mean: float = 0.0
        time_std: float = 1.0
        # Sampling defaults (SamplingOptions fields left None), from xAR's README and
        # sampler: Euler-Maruyama, 40 steps for every cell (B; H uses 50), guidance 2.7
        # (B; H 2.2) ramped linearly over the cells. steps_first != steps_last ramps
        # the step count over the cells instead (this project's earlier 50 -> 10).
        sampler: Integrator = "euler_maruyama"
        steps_first: int = 40
        steps_last: int = 40
        cfg_scale: float = 2.7
        cfg_schedule: CfgSchedule = "linear"

    def __init__(
        self,
        config: Config,
        *,
        codebook_sizes: Mapping[str, int] | None = None,
        grid_size: int | Sequence[int],
        channels: int,
        num_classes: int,
    ):
        super().__init__()
        self.config = config
        self.grid = check_grid(grid_size)
        if not channels or channels <= 0:
            raise ConfigError(
                "xar: the token set has no feature channels (quantized/with_residual)"
            )
        cell = config.cell_size
        if cell <= 0 or self.grid[0] % cell or self.grid[1] % cell:
            raise ConfigError(
                f"xar: cell_size {cell} does not tile the {self.grid[0]}x{self.grid[1]} token grid"
            )
        self.channels = channels
        self.num_classes = num_classes
        self.cell_len = cell * cell
        self.cells = (self.grid[0] // cell) * (self.grid[1] // cell)
        rows, cols, groups = _cell_order(*self.grid, cell)
        # order[p]: raster index of the token at sequence position p; groups[p]: its cell.
        self.register_buffer("order", rows * self.grid[1] + cols, persistent=False)
        self.register_buffer("groups", groups, persistent=False)
        self.register_buffer(
            "rope",
            rope_table(rows, cols, config.dim // config.heads, config.rope_base),
            persistent=False,
        )
        self.register_buffer("mask", groups[None, :] <= groups[:, None], persistent=False)
        self.register_buffer("feature_mean", torch.zeros(channels))
        self.register_buffer("feature_std", torch.ones(channels))

        dim = config.dim
        length = self.cells * self.cell_len
        self.in_proj = nn.Linear(channels, dim)
        self.encoder_positions = (
            nn.Parameter(torch.zeros(length, dim)) if config.learned_positions else None
        )
        self.in_norm = RMSNorm(dim) if config.input_norm else None
        self.classes = ClassEmbedding(num_classes, dim, config.class_dropout)
        self.time = TimeEmbedding(dim)
        hidden = swiglu_hidden(dim, config.mlp_ratio)
        self.blocks = nn.ModuleList(
            Block(
                dim,
                config.heads,
                ffn_hidden=hidden,
                bias=True,
                dropout=config.dropout,
                attn_dropout=config.attn_dropout,
                ffn_hidden_dropout=config.dropout,
                activation="gelu" if config.mlp == "geglu" else "silu",
                adaptive=True,
            )
            for _ in range(config.depth)
        )
        # Index of the first decoder block; the middle norm and map run just before it.
        self.split = config.depth // 2 if config.encoder_decoder else None
        self.middle_norm = RMSNorm(dim) if config.encoder_decoder else None
        self.decoder_embed = nn.Linear(dim, dim) if config.encoder_decoder else None
        self.decoder_positions = (
            nn.Parameter(torch.zeros(length, dim))
            if config.encoder_decoder and config.learned_positions
            else None
        )
        self.norm = RMSNorm(dim)
        self.out = nn.Linear(dim, channels)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)  # as xAR (JAX ViT)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.classes.table.weight, std=0.02)
        for positions in (self.encoder_positions, self.decoder_positions):
            if positions is not None:
                nn.init.normal_(positions, std=0.02)
        if self.config.adaln_zero:
            # adaLN-Zero (DiT): every block starts as the identity and the prediction at 0.
            for block in self.blocks:
                nn.init.zeros_(block.modulation[1].weight)
                nn.init.zeros_(block.modulation[1].bias)
            nn.init.zeros_(self.out.weight)

    @property
    def data_keys(self) -> tuple[str, ...]:
        return (self.config.features,)

    # -- features <-> sequence ---------------------------------------------------------------

    @torch.no_grad()
    def fit_statistics(self, tensors: Mapping[str, torch.Tensor], chunk: int = 4096) -> None:
        """Set the per-channel mean/std from the training features (no-op unless ``normalize``).

        tensors[features]: [N, C, h, w], any float dtype; summed in fp64 chunks so a
        10 GB fp16 ImageNet feature set is never copied whole.
        """
        if not self.config.normalize:
            return
        features = tensors[self.config.features]
        if features.ndim == 5:  # [N, V, C, h, w]: every stored view counts
            features = features.flatten(0, 1)
        total = torch.zeros(self.channels, dtype=torch.float64)
        squares = torch.zeros(self.channels, dtype=torch.float64)
        for start in range(0, features.shape[0], chunk):
            part = (
                features[start : start + chunk].double().transpose(0, 1).reshape(self.channels, -1)
            )
            total += part.sum(1)
            squares += part.pow(2).sum(1)
        count = features.shape[0] * features.shape[2] * features.shape[3]
        mean = total / count
        std = (squares / count - mean.pow(2)).clamp_min(1e-12).sqrt()
        self.feature_mean.copy_(mean.float())
        self.feature_std.copy_(std.clamp_min(1e-6).float())

    def to_sequence(self, features: torch.Tensor) -> torch.Tensor:
        """Features [B, C, h, w] -> normalised sequence [B, L, C] in cell order."""
        shape = (1, -1, 1, 1)
        x = (features.float() - self.feature_mean.view(shape)) / self.feature_std.view(shape)
        return x.flatten(2).transpose(1, 2)[:, self.order]

    def to_features(self, sequence: torch.Tensor) -> torch.Tensor:
        """Normalised sequence [B, L, C] in cell order -> features [B, C, h, w]."""
        raster = torch.empty_like(sequence)
        raster[:, self.order] = sequence
        x = raster.transpose(1, 2).reshape(sequence.shape[0], self.channels, *self.grid)
        return x * self.feature_std.view(1, -1, 1, 1) + self.feature_mean.view(1, -1, 1, 1)

    # -- network -----------------------------------------------------------------------------

    def velocity(
        self,
        x_t: torch.Tensor,
        labels: torch.Tensor,
        times: torch.Tensor,
        *,
        first_cell: int = 0,
        caches: list[KVCache] | None = None,
        store: bool = True,
    ) -> torch.Tensor:
        """Predicted velocity for cells ``first_cell ..`` of the sequence.

        x_t [B, n * cell_len, C] (n whole cells), labels [B], times [B, n] (one per cell).
        Without caches the cells attend block-causally among themselves (and must start
        at cell 0); with caches they also see every cached cell (``store``: keep these).
        """
        start = first_cell * self.cell_len
        positions = slice(start, start + x_t.shape[1])
        groups = self.groups[positions] - first_cell
        condition = self.classes(labels)[:, None] + self.time(times)
        rope = self.rope[positions]
        mask = None
        if caches is None:
            if first_cell:
                raise ValueError("without a KV cache the sequence must start at cell 0")
            mask = self.mask[positions, positions]
        h = self.in_proj(x_t)
        if self.encoder_positions is not None:
            h = h + self.encoder_positions[positions]
        if self.in_norm is not None:
            h = self.in_norm(h)
        for index, block in enumerate(self.blocks):
            if index == self.split:
                h = self.decoder_embed(self.middle_norm(h))
                if self.decoder_positions is not None:
                    h = h + self.decoder_positions[positions]
            cache = None if caches is None else caches[index]
            h = block(
                h, rope, mask=mask, cache=cache, store=store, condition=condition, groups=groups
            )
        return self.out(self.norm(h)).float()

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Velocity loss with an independent flow time per cell (a 0-dim tensor)."""
        x = self.to_sequence(batch[self.config.features])
        times = sample_times(
            (x.shape[0], self.cells),
            self.config.time_sampling,
            self.config.time_mean,
            self.config.time_std,
            x.device,
        )
        x_t, target = interpolate(x, torch.randn_like(x), times[:, self.groups, None])
        return F.mse_loss(self.velocity(x_t, batch["labels"], times), target)

    def loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self(batch)

    # -- sampling ----------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        labels: torch.Tensor,
        options: SamplingOptions | None = None,
        *,
        generator: torch.Generator | None = None,
        **changes: Any,
    ) -> torch.Tensor:
        """labels [B] -> features [B, C, h, w] of the kind ``config.features`` names
        (de-normalised; ``quantized`` ones still lack the tokenizer's residual).

        ``options`` (with ``changes`` applied; unset fields from the config):
        ``temperature`` scales the starting noise of every cell; ``top_k``/``top_p`` have
        no meaning for continuous features and must stay at their defaults.
        """
        opts = sampling_options(options, **changes).resolve(self.config)
        if opts.top_k or opts.top_p != 1.0:
            raise ConfigError("xar samples continuous features: top_k / top_p do not apply")
        if opts.temperature <= 0:
            raise ConfigError(f"xar: temperature must be > 0, got {opts.temperature}")
        cfg_scale = opts.cfg_scale
        labels = labels.to(self.out.weight.device)
        generator = generator or make_generator(opts.seed, labels.device)
        batch = labels.shape[0]
        guided = cfg_scale != 1.0
        both = torch.cat([labels, self.classes.null(labels)]) if guided else labels

        def doubled(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t, t]) if guided else t

        caches = (
            [KVCache(self.cells * self.cell_len) for _ in self.blocks] if opts.kv_cache else None
        )
        done: list[torch.Tensor] = []
        with evaluating(self):
            for cell in range(self.cells):
                scale = cfg_scale_at(cell, self.cells, cfg_scale, opts.cfg_schedule)

                def velocity(
                    z: torch.Tensor, t: float, cell: int = cell, scale: float = scale
                ) -> torch.Tensor:
                    if caches is not None:
                        times = z.new_full((both.shape[0], 1), t)
                        v = self.velocity(
                            doubled(z), both, times, first_cell=cell, caches=caches, store=False
                        )
                    else:
                        times = torch.cat(
                            [z.new_zeros(both.shape[0], cell), z.new_full((both.shape[0], 1), t)], 1
                        )
                        v = self.velocity(doubled(torch.cat([*done, z], dim=1)), both, times)[
                            :, -self.cell_len :
                        ]
                    return guide(*v.chunk(2), scale) if guided else v

                noise = opts.temperature * torch.randn(
                    (batch, self.cell_len, self.channels), generator=generator, device=labels.device
                )
                steps = steps_for_cell(cell, self.cells, opts.steps_first, opts.steps_last)
                clean = integrate(
                    velocity, noise, steps, method=opts.sampler, generator=generator
                )
                done.append(clean)
                if caches is not None and cell + 1 < self.cells:
                    # Store the finished cell as context, at t = 0 as the uncached path sees it.
                    self.velocity(
                        doubled(clean),
                        both,
                        clean.new_zeros(both.shape[0], 1),
                        first_cell=cell,
                        caches=caches,
                        store=True,
                    )
        return self.to_features(torch.cat(done, dim=1))


def _cell_order(
    height: int, width: int, cell: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, column, cell index) of each sequence position: cells in raster order, then
    tokens in raster order inside each cell."""
    cells_w = width // cell
    cell_ids = torch.arange((height // cell) * cells_w).repeat_interleave(cell * cell)
    inner = torch.arange(cell * cell).repeat((height // cell) * cells_w)
    rows = (cell_ids // cells_w) * cell + inner // cell
    cols = (cell_ids % cells_w) * cell + inner % cell
    return rows, cols, cell_ids
