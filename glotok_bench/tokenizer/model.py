"""The assembled tokenizer: encoder -> quantizer -> residual heads -> decoder.

Decoder input is cat([semantic, visual]) along channels (GloTok Sec. 3.2), each half
being Z_hat + Z_res (Eq. 11-12). A 1x1 conv (``post_quant``) maps the concatenated code
channels back to the decoder's z channels, as LlamaGen's ``post_quant_conv`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glotok_bench.config import ComponentChoice, structure
from glotok_bench.errors import ConfigError
from glotok_bench.registry import Registry, get_registry
from glotok_bench.tokenizer.config import TokenizerConfig

# (config field, registry kind) of every component a TokenizerConfig holds.
COMPONENT_FIELDS = (
    ("autoencoder", "autoencoder"),
    ("quantizer", "quantizer"),
    ("residual_head", "residual_head"),
)


@dataclass
class BranchEncoding:
    """One branch (e.g. "semantic"); tensors [B, d, h, w], indices [B, h, w]."""

    continuous: torch.Tensor  # Z (adapter output; l2-normalised for cosine codebooks)
    quantized: torch.Tensor  # Z_hat, straight-through
    residual: torch.Tensor | None  # Z_res, or None without a residual head
    with_residual: torch.Tensor  # Z_hat + Z_res
    indices: torch.Tensor


@dataclass
class Encoding:
    """What :meth:`Tokenizer.encode` returns. Channel tensors are [B, C, h, w], C = sum d.

    ``quantized`` has no residual; ``with_residual`` is what the decoder sees. A caller
    that wants to zero parts (e.g. the visual half) edits ``branches`` and re-concatenates
    with :meth:`Tokenizer.concat`.
    """

    indices: dict[str, torch.Tensor]
    quantized: torch.Tensor
    with_residual: torch.Tensor
    continuous: torch.Tensor
    branches: dict[str, BranchEncoding]


@dataclass
class TokenizerOutput:
    reconstruction: torch.Tensor  # [B, 3, H, W], roughly in [-1, 1]
    quantizer_loss: torch.Tensor  # L_Q, summed over codebooks
    residual_loss: torch.Tensor  # L_res (Eq. 10), summed over branches; 0 without heads
    stats: dict[str, torch.Tensor]  # per-codebook usage and perplexity of this batch
    encoding: Encoding
    # The quantizer's extra terms, already weighted (QuantizerOutput.regularizers).
    regularizers: dict[str, torch.Tensor] = field(default_factory=dict)


class Tokenizer(nn.Module):
    """GloTok-style image tokenizer assembled from registered components."""

    def __init__(self, config: TokenizerConfig, *, registry: Registry | None = None):
        super().__init__()
        registry = registry or get_registry()
        self.config = config
        self.autoencoder = registry.create(
            "autoencoder",
            config.autoencoder.name,
            config.autoencoder.config,
            resolution=config.resolution,
        )
        self.quantizer = registry.create(
            "quantizer",
            config.quantizer.name,
            config.quantizer.config,
            # An autoencoder whose encoder ends at a shared trunk (FQGAN topology) hands the
            # quantizer wider features than its decoder takes back.
            in_channels=getattr(self.autoencoder, "encoder_channels", self.autoencoder.z_channels),
        )
        _check_token_grid(config, getattr(self.quantizer, "token_grid", None), self.autoencoder.grid_size)
        self.residual_heads = nn.ModuleDict(
            {
                name: registry.create(
                    "residual_head",
                    config.residual_head.name,
                    config.residual_head.config,
                    channels=dim,
                )
                for name, dim in self.quantizer.code_dims.items()
            }
        )
        self.post_quant = nn.Conv2d(self.quantizer.out_channels, self.autoencoder.z_channels, 1)

    # -- properties other modules rely on ---------------------------------------------

    @property
    def codebook_sizes(self) -> dict[str, int]:
        return dict(self.quantizer.codebook_sizes)

    @property
    def latent_channels(self) -> int:
        return self.quantizer.out_channels

    @property
    def grid_size(self) -> int:
        return self.autoencoder.grid_size

    def semantic_codebook(self) -> torch.Tensor | None:
        """Raw learnable semantic codebook weight [n, d], or None if there is no such branch."""
        if "semantic" not in self.quantizer.codebook_sizes:
            return None
        return self.quantizer.codebook_weight("semantic")

    # -- encode / decode --------------------------------------------------------------

    def concat(self, per_branch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """{branch: [B, d, h, w]} -> [B, C, h, w] in the decoder's branch order."""
        return torch.cat([per_branch[name] for name in self.quantizer.branch_names], dim=1)

    def _quantize(
        self, images: torch.Tensor
    ) -> tuple[Encoding, torch.Tensor, torch.Tensor, dict, dict]:
        out = self.quantizer(self.autoencoder.encode(images))
        branches: dict[str, BranchEncoding] = {}
        residual_losses = []
        for name, branch in out.branches.items():
            head = self.residual_heads[name]
            residual = head(branch.quantized)
            with_residual = branch.quantized if residual is None else branch.quantized + residual
            residual_losses.append(
                head.loss(branch.continuous, branch.quantized, residual, code=branch.code)
            )
            branches[name] = BranchEncoding(
                branch.continuous, branch.quantized, residual, with_residual, branch.indices
            )
        encoding = Encoding(
            indices={name: b.indices for name, b in branches.items()},
            quantized=self.concat({n: b.quantized for n, b in branches.items()}),
            with_residual=self.concat({n: b.with_residual for n, b in branches.items()}),
            continuous=self.concat({n: b.continuous for n, b in branches.items()}),
            branches=branches,
        )
        residual_loss = torch.stack(residual_losses).sum()
        return encoding, out.loss, residual_loss, out.stats, out.regularizers

    def encode(self, images: torch.Tensor) -> Encoding:
        """Images [B, 3, H, W] in [-1, 1] -> :class:`Encoding` (grid h = H / downsampling)."""
        return self._quantize(images)[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, C, h, w] (``with_residual`` or ``quantized`` layout) -> images [B, 3, H, W]."""
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"decode expects latents [B, {self.latent_channels}, h, w], got {tuple(latents.shape)}"
            )
        return self.autoencoder.decode(self.post_quant(latents))

    def latents_from_indices(
        self, indices: Mapping[str, torch.Tensor], *, residual: bool = True
    ) -> torch.Tensor:
        """{branch: LongTensor [B, h, w]} -> latents [B, C, h, w], with Z_res added if ``residual``."""
        codes = self.quantizer.lookup(dict(indices))
        return self.concat(self._add_residuals(codes) if residual else codes)

    def add_residual(self, quantized: torch.Tensor) -> torch.Tensor:
        """``quantized`` latents [B, C, h, w] (bare codes, e.g. sampled by an xAR that
        models them) -> ``with_residual`` latents, each branch's Z_res added (Eq. 11-12)."""
        names = self.quantizer.branch_names
        widths = [self.quantizer.code_dims[name] for name in names]
        if quantized.ndim != 4 or quantized.shape[1] != sum(widths):
            raise ValueError(
                f"add_residual expects latents [B, {sum(widths)}, h, w], got {tuple(quantized.shape)}"
            )
        return self.concat(
            self._add_residuals(dict(zip(names, quantized.split(widths, dim=1), strict=True)))
        )

    def _add_residuals(self, codes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = dict(codes)
        for name, head in self.residual_heads.items():
            predicted = head(codes[name])
            if predicted is not None:
                out[name] = codes[name] + predicted
        return out

    def decode_indices(self, indices: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """{branch: LongTensor [B, h, w]} -> images [B, 3, H, W] (residual heads applied)."""
        return self.decode(self.latents_from_indices(indices))

    def forward(self, images: torch.Tensor) -> TokenizerOutput:
        """Images [B, 3, H, W] -> reconstruction, L_Q, L_res, usage stats and the encoding."""
        encoding, quantizer_loss, res_loss, stats, regularizers = self._quantize(images)
        reconstruction = self.decode(encoding.with_residual)
        return TokenizerOutput(
            reconstruction, quantizer_loss, res_loss, stats, encoding, regularizers
        )

    def decoder_last_layer(self) -> torch.Tensor:
        """The autoencoder's output-layer weight (the adaptive GAN weight is measured there)."""
        return self.autoencoder.last_layer()

    def window_usage(self, reset: bool = True) -> dict[str, torch.Tensor]:
        """Fraction of each codebook hit since the last reset (training steps only)."""
        return self.quantizer.window_usage(reset)


def build_tokenizer(config: TokenizerConfig, *, registry: Registry | None = None) -> Tokenizer:
    """Build a :class:`Tokenizer`; bad component settings raise :class:`ConfigError`."""
    return Tokenizer(config, registry=registry)


def _check_token_grid(config: TokenizerConfig, quantizer_grid: int | None, autoencoder_grid: int) -> None:
    # A transformer adapter's positional embedding fits one token grid; unchecked, a wrong
    # grid_size surfaces only as a shape error in the first forward pass.
    if quantizer_grid is None or quantizer_grid == autoencoder_grid:
        return
    raise ConfigError(
        f"tokenizer.quantizer.adapter.grid_size = {quantizer_grid}, but tokenizer.resolution = "
        f"{config.resolution} at the autoencoder's {config.resolution // autoencoder_grid}x "
        f"downsampling gives a token grid of {autoencoder_grid}x{autoencoder_grid}; "
        f"set adapter.grid_size = {autoencoder_grid} or resolution = "
        f"{quantizer_grid * (config.resolution // autoencoder_grid)}"
    )


def tokenizer_config_from_dict(
    data: Mapping[str, Any], *, registry: Registry | None = None
) -> TokenizerConfig:
    """Rebuild a :class:`TokenizerConfig` from its ``to_dict`` form (e.g. from a checkpoint)."""
    registry = registry or get_registry()
    data = dict(data)
    kwargs: dict[str, Any] = {}
    for key, kind in COMPONENT_FIELDS:
        if key not in data:
            continue
        options = dict(data.pop(key))
        name = options.pop("name")
        config_cls = registry.config_class(kind, name)
        kwargs[key] = ComponentChoice(
            name, structure(config_cls, options, source=f"tokenizer.{key}")
        )
    unknown = set(data) - {"resolution"}
    if unknown:
        raise ConfigError(f"tokenizer config has unknown keys {sorted(unknown)}")
    return TokenizerConfig(**kwargs, **data)


# -- presets ------------------------------------------------------------------------------


def load_tokenizer_config(path: str | Path, overrides: Sequence[str] = ()) -> TokenizerConfig:
    """The ``[tokenizer]`` table of a run config file (``extends`` followed), typed.

    Tokenizer presets are these files and nothing else: ``configs/glotok.toml`` (the
    paper's), ``configs/glotok-2x.toml``, ``configs/vq-single.toml``, the CPU ones in
    ``configs/cpu/`` and the unit tests' ``tests/configs/tiny-16.toml``. ``overrides`` are
    ``key=value`` paths inside the table (``quantizer.code_dim=4``).
    """
    from glotok_bench.config import apply_overrides, read_toml_with_extends

    path = Path(path)
    table = read_toml_with_extends(path).get("tokenizer", {})
    return structure(TokenizerConfig, apply_overrides(table, overrides), source=f"{path} [tokenizer]")
