"""What the built-in peer formats share: no settings, and the tokenizer both map onto."""

from __future__ import annotations

from typing import Any

import attrs

from glotok_bench.config import ComponentChoice
from glotok_bench.registry import Registry
from glotok_bench.tokenizer.config import TokenizerConfig


class PeerFormat:
    """A released family's checkpoint layout. Context: none; a format has no settings,
    since everything it needs is read from the file."""

    family: str  # what leaderboard rows call the family

    @attrs.frozen(kw_only=True)
    class Config:
        pass

    def __init__(self, config: Config | None = None):
        self.config = config or self.Config()


def conv_tokenizer(
    resolution: int, autoencoder: Any, quantizer: ComponentChoice, registry: Registry | None
) -> Any:
    """Our tokenizer in the peers' shape: the ``vqgan-conv`` autoencoder, ``quantizer`` and
    no residual head (neither peer has one); randomly initialised, for the mapped weights."""
    from glotok_bench.tokenizer.model import Tokenizer
    from glotok_bench.tokenizer.residual import NoResidualHead

    config = TokenizerConfig(
        resolution=resolution,
        autoencoder=ComponentChoice("vqgan-conv", autoencoder),
        quantizer=quantizer,
        residual_head=ComponentChoice("none", NoResidualHead.Config()),
    )
    return Tokenizer(config, registry=registry)
