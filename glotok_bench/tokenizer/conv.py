"""VQGAN-style convolutional encoder and decoder, configured like LlamaGen's VQ-16.

LlamaGen VQ-16: base 128 channels, multipliers (1, 1, 2, 2, 4) -> 16x downsampling,
2 residual blocks per level, z channels 256, attention at the lowest resolution and in
the middle block. The small presets shrink width and depth so they train on 2 CPU cores.
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from glotok_bench.errors import ConfigError


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    # gcd keeps GroupNorm valid for narrow CPU presets (e.g. 16 channels with 32 groups).
    return nn.GroupNorm(math.gcd(channels, groups), channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a skip; [B, c_in, H, W] -> [B, c_out, H, W]."""

    def __init__(self, c_in: int, c_out: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = _norm(c_out, groups)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over all H*W positions, with a residual connection."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        # One 1x1 conv for q, k and v: one GEMM instead of three.
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2)  # [B,3,HW,C]
        out = F.scaled_dot_product_attention(qkv[:, 0:1], qkv[:, 1:2], qkv[:, 2:3])
        out = out.squeeze(1).transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv with VQGAN's asymmetric (right/bottom) padding: H -> H/2."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 conv: H -> 2H."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    """Image [B, 3, H, W] -> features [B, z_channels, H/f, W/f], f = 2**(levels-1)."""

    def __init__(self, config: ConvAutoencoder.Config):
        super().__init__()
        ch, mults, g = config.base_channels, config.channel_multipliers, config.norm_groups
        # conv_in gives `ch` channels and the first level's blocks widen to ch * mults[0],
        # as in LlamaGen/FQGAN, so their checkpoints map onto this module one to one.
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        layers: list[nn.Module] = []
        c_in = ch
        for level, mult in enumerate(mults):
            c_out = ch * mult
            last = level == len(mults) - 1
            for _ in range(config.num_res_blocks):
                layers.append(ResnetBlock(c_in, c_out, g, config.dropout))
                c_in = c_out
                if last and config.attention_lowest_level:
                    layers.append(AttentionBlock(c_in, g))
            if not last:
                layers.append(Downsample(c_in))
        self.down = nn.Sequential(*layers)
        self.mid = _middle(c_in, config)
        self.trunk_channels = c_in
        self.with_output_head = config.encoder_output == "z"
        if self.with_output_head:
            self.norm_out = _norm(c_in, g)
            self.conv_out = nn.Conv2d(c_in, config.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.down(self.conv_in(x)))
        if not self.with_output_head:
            return h
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Features [B, z_channels, h, w] -> image [B, 3, h*f, w*f] (unbounded; ~[-1, 1])."""

    def __init__(self, config: ConvAutoencoder.Config):
        super().__init__()
        ch, mults, g = config.base_channels, config.channel_multipliers, config.norm_groups
        c_in = ch * mults[-1]
        self.conv_in = nn.Conv2d(config.z_channels, c_in, 3, padding=1)
        self.mid = _middle(c_in, config)
        layers: list[nn.Module] = []
        for level, mult in enumerate(reversed(mults)):
            c_out = ch * mult
            # One more block per level than the encoder, as in VQGAN.
            for _ in range(config.num_res_blocks + 1):
                layers.append(ResnetBlock(c_in, c_out, g, config.dropout))
                c_in = c_out
                if level == 0 and config.attention_lowest_level:
                    layers.append(AttentionBlock(c_in, g))
            if level != len(mults) - 1:
                layers.append(Upsample(c_in))
        self.up = nn.Sequential(*layers)
        self.norm_out = _norm(c_in, g)
        self.conv_out = nn.Conv2d(c_in, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.up(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))


def _middle(channels: int, config: ConvAutoencoder.Config) -> nn.Sequential:
    g, p = config.norm_groups, config.dropout
    if not config.attention_middle:
        return nn.Sequential(
            ResnetBlock(channels, channels, g, p), ResnetBlock(channels, channels, g, p)
        )
    return nn.Sequential(
        ResnetBlock(channels, channels, g, p),
        AttentionBlock(channels, g),
        ResnetBlock(channels, channels, g, p),
    )


class ConvAutoencoder(nn.Module):
    """The ``vqgan-conv`` autoencoder component. Context: ``resolution: int``.

    ``encode``: [B, 3, R, R] -> [B, encoder_channels, R/f, R/f]; ``decode``: [B, z_channels,
    R/f, R/f] -> [B, 3, R, R]. The two widths are equal unless ``encoder_output = "trunk"``.
    """

    @attrs.frozen(kw_only=True)
    class Config:
        base_channels: int = 128
        channel_multipliers: tuple[int, ...] = (1, 1, 2, 2, 4)
        num_res_blocks: int = 2
        z_channels: int = 256
        dropout: float = 0.0
        norm_groups: int = 32
        attention_lowest_level: bool = True
        attention_middle: bool = True
        # "z": the encoder ends with norm + conv to z_channels (VQGAN/LlamaGen). "trunk": it
        # stops after the middle block and hands the quantizer the trunk features
        # (base_channels * channel_multipliers[-1] of them), whose per-branch transformer
        # adapters end with their own norm + conv (FQGAN's dual topology; see adapters.py).
        encoder_output: Literal["z", "trunk"] = "z"

    def __init__(self, config: Config, *, resolution: int):
        super().__init__()
        if config.base_channels <= 0 or config.z_channels <= 0 or config.num_res_blocks < 0:
            raise ConfigError(f"vqgan-conv: channels and block counts must be positive: {config}")
        if not config.channel_multipliers or min(config.channel_multipliers) <= 0:
            raise ConfigError(
                f"vqgan-conv: channel_multipliers must be positive, got {config.channel_multipliers}"
            )
        self.config = config
        self.downsample_factor = 2 ** (len(config.channel_multipliers) - 1)
        if resolution % self.downsample_factor:
            raise ConfigError(
                f"vqgan-conv: resolution {resolution} is not divisible by the downsampling "
                f"factor {self.downsample_factor} of channel_multipliers {config.channel_multipliers}"
            )
        self.resolution = resolution
        self.grid_size = resolution // self.downsample_factor
        self.z_channels = config.z_channels  # what the decoder takes
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.encoder_channels = (  # what encode() returns, i.e. the quantizer's input
            config.z_channels if config.encoder_output == "z" else self.encoder.trunk_channels
        )

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(features)

    def last_layer(self) -> torch.Tensor:
        """The weight producing the image (for the adaptive GAN weight)."""
        return self.decoder.conv_out.weight
