"""PatchGAN discriminator (Isola et al. 2017), the one VQGAN and LlamaGen train against."""

from __future__ import annotations

import torch
from torch import nn

from glotok_bench.errors import ConfigError
from glotok_bench.tokenizer.config import DiscriminatorConfig


class PatchDiscriminator(nn.Module):
    """Images [B, 3, H, W] -> patch logits [B, 1, H', W'] (one real/fake score per patch).

    ``num_layers`` stride-2 convs halve the size each; two stride-1 4x4 convs follow, so
    the input must be at least 2**num_layers * 4 pixels wide (checked at build time).
    """

    def __init__(self, config: DiscriminatorConfig, *, resolution: int):
        super().__init__()
        size = resolution // 2**config.num_layers - 2
        if size < 1:
            raise ConfigError(
                f"discriminator: {config.num_layers} layers reduce {resolution} px to nothing; "
                f"use num_layers <= {max(1, (resolution // 4).bit_length() - 1)}"
            )
        ch = config.base_channels

        def norm(channels: int) -> nn.Module:
            if config.norm == "batch":
                return nn.BatchNorm2d(channels)
            return nn.GroupNorm(min(32, channels), channels)

        layers: list[nn.Module] = [nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, config.num_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < config.num_layers else 1
            layers += [nn.Conv2d(ch * prev, ch * mult, 4, stride, 1, bias=False), norm(ch * mult)]
            layers.append(nn.LeakyReLU(0.2, True))
        layers.append(nn.Conv2d(ch * mult, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def _init_weights(module: nn.Module) -> None:
    # The PatchGAN initialisation: N(0, 0.02) convs, N(1, 0.02) norm scales.
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
