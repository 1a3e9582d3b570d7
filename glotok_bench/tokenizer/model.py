"""The assembled tokenizer: encoder -> quantizer -> residual heads -> decoder.

Decoder input is cat([semantic, visual]) along channels (GloTok Sec. 3.2), each half
being Z_hat + Z_res (Eq. 11-12). A 1x1 conv (``post_quant``) maps the concatenated code
channels back to the decoder's z channels, as LlamaGen's ``post_quant_conv`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
            in_channels=self.autoencoder.z_channels,
        )
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

    def _quantize(self, images: torch.Tensor) -> tuple[Encoding, torch.Tensor, torch.Tensor, dict]:
        out = self.quantizer(self.autoencoder.encode(images))
        branches: dict[str, BranchEncoding] = {}
        residual_losses = []
        for name, branch in out.branches.items():
            head = self.residual_heads[name]
            residual = head(branch.quantized)
            with_residual = branch.quantized if residual is None else branch.quantized + residual
            residual_losses.append(head.loss(branch.continuous, branch.quantized, residual))
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
        return encoding, out.loss, torch.stack(residual_losses).sum(), out.stats

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
        if residual:
            for name, head in self.residual_heads.items():
                predicted = head(codes[name])
                if predicted is not None:
                    codes[name] = codes[name] + predicted
        return self.concat(codes)

    def decode_indices(self, indices: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """{branch: LongTensor [B, h, w]} -> images [B, 3, H, W] (residual heads applied)."""
        return self.decode(self.latents_from_indices(indices))

    def forward(self, images: torch.Tensor) -> TokenizerOutput:
        """Images [B, 3, H, W] -> reconstruction, L_Q, L_res, usage stats and the encoding."""
        encoding, quantizer_loss, res_loss, stats = self._quantize(images)
        reconstruction = self.decode(encoding.with_residual)
        return TokenizerOutput(reconstruction, quantizer_loss, res_loss, stats, encoding)

    def decoder_last_layer(self) -> torch.Tensor:
        """The autoencoder's output-layer weight (the adaptive GAN weight is measured there)."""
        return self.autoencoder.last_layer()

    def window_usage(self, reset: bool = True) -> dict[str, torch.Tensor]:
        """Fraction of each codebook hit since the last reset (training steps only)."""
        return self.quantizer.window_usage(reset)


def build_tokenizer(config: TokenizerConfig, *, registry: Registry | None = None) -> Tokenizer:
    """Build a :class:`Tokenizer`; bad component settings raise :class:`ConfigError`."""
    return Tokenizer(config, registry=registry)


def tokenizer_config_from_dict(
    data: Mapping[str, Any], *, registry: Registry | None = None
) -> TokenizerConfig:
    """Rebuild a :class:`TokenizerConfig` from its ``to_dict`` form (e.g. from a checkpoint)."""
    registry = registry or get_registry()
    data = dict(data)
    kwargs: dict[str, Any] = {}
    for field, kind in COMPONENT_FIELDS:
        if field not in data:
            continue
        options = dict(data.pop(field))
        name = options.pop("name")
        config_cls = registry.config_class(kind, name)
        kwargs[field] = ComponentChoice(
            name, structure(config_cls, options, source=f"tokenizer.{field}")
        )
    unknown = set(data) - {"resolution"}
    if unknown:
        raise ConfigError(f"tokenizer config has unknown keys {sorted(unknown)}")
    return TokenizerConfig(**kwargs, **data)


# -- presets ------------------------------------------------------------------------------


def tokenizer_preset(name: str) -> TokenizerConfig:
    """Named tokenizer configs: the paper's models and small CPU presets.

    ``glotok`` (256 px, 4096 + 12288 codes, transformer residual heads), ``glotok-2x``
    (16384 x 2), ``llamagen-vq`` (single 16384 codebook, no residual), ``cpu-32`` and
    ``cpu-64`` (narrow nets with an 8x8 token grid that train on 2 CPU cores) and
    ``tiny-16`` (a 16 px smoke-test model for unit tests).
    """
    from glotok_bench.tokenizer.conv import ConvAutoencoder
    from glotok_bench.tokenizer.quantizers import DualQuantizer, VectorQuantizer
    from glotok_bench.tokenizer.residual import NoResidualHead, TransformerResidualHead

    def make(resolution, conv, quantizer_name, quantizer, head_name, head):
        return TokenizerConfig(
            resolution=resolution,
            autoencoder=ComponentChoice("vqgan-conv", conv),
            quantizer=ComponentChoice(quantizer_name, quantizer),
            residual_head=ComponentChoice(head_name, head),
        )

    transformer = TransformerResidualHead.Config
    presets = {
        "glotok": lambda: make(
            256,
            ConvAutoencoder.Config(),
            "dual",
            DualQuantizer.Config(),
            "transformer",
            transformer(),
        ),
        "glotok-2x": lambda: make(
            256,
            ConvAutoencoder.Config(),
            "dual",
            DualQuantizer.Config(semantic_size=16_384, visual_size=16_384),
            "transformer",
            transformer(),
        ),
        "llamagen-vq": lambda: make(
            256,
            ConvAutoencoder.Config(),
            "vq",
            VectorQuantizer.Config(),
            "none",
            NoResidualHead.Config(),
        ),
        # 32 px -> 8x8 tokens (4x down); codebooks keep GloTok's 1:3 semantic:visual split.
        "cpu-32": lambda: make(
            32,
            ConvAutoencoder.Config(
                base_channels=32, channel_multipliers=(1, 2, 2), num_res_blocks=1, z_channels=64
            ),
            "dual",
            DualQuantizer.Config(semantic_size=256, visual_size=768),
            "transformer",
            transformer(width=64, heads=2),
        ),
        # 16 px, 2x down: a smoke-test size (unit tests, CI), not a useful tokenizer.
        "tiny-16": lambda: make(
            16,
            ConvAutoencoder.Config(
                base_channels=16, channel_multipliers=(1, 2), num_res_blocks=1, z_channels=16
            ),
            "dual",
            DualQuantizer.Config(semantic_size=16, visual_size=48, code_dim=4),
            "transformer",
            transformer(width=16, heads=2),
        ),
        # 64 px -> 8x8 tokens (8x down).
        "cpu-64": lambda: make(
            64,
            ConvAutoencoder.Config(
                base_channels=32, channel_multipliers=(1, 2, 2, 4), num_res_blocks=1, z_channels=64
            ),
            "dual",
            DualQuantizer.Config(semantic_size=1024, visual_size=3072),
            "transformer",
            transformer(width=64, heads=2),
        ),
    }
    if name not in presets:
        raise ConfigError(f"unknown tokenizer preset {name!r}; known: {', '.join(sorted(presets))}")
    return presets[name]()


TOKENIZER_PRESETS = ("glotok", "glotok-2x", "llamagen-vq", "cpu-32", "cpu-64", "tiny-16")
