"""LlamaGen's VQModel (``tokenizer/tokenizer_image/vq_model.py``: VQ-8, VQ-16) as a tokenizer.

encoder -> quant_conv (1x1 to the code dim) -> quantize (l2-normalised codes and
features, argmin of squared distance) -> post_quant_conv -> decoder: our ``vqgan-conv``
autoencoder, ``vq`` quantizer (cosine) and no residual head, with the weights renamed.
Codebook size and dim, widths, depth and z channels come from the shapes; the image size
and ``codebook_l2_norm`` from the saved ``args`` (LlamaGen's defaults when absent).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from glotok_bench.config import ComponentChoice
from glotok_bench.errors import CheckpointError
from glotok_bench.registry import Registry
from glotok_bench.tokenizer.peers.base import PeerFormat, conv_tokenizer
from glotok_bench.tokenizer.peers.mapping import (
    StateMapper,
    conv_autoencoder_config,
    load_mapped,
    map_conv_autoencoder,
)

# Training-only state: LlamaGen's rolling window of recently used code indices.
IGNORED = ("quantize.codebook_used",)


def peer_resolution(args: Mapping[str, Any], downsampling: int, source: str) -> int:
    """The image size the peer was trained at (``args.image_size``, else 256)."""
    resolution = int(args.get("image_size") or 256)
    if resolution % downsampling:
        raise CheckpointError(f"{source}: image_size {resolution} is not a multiple of the {downsampling}x downsampling")
    return resolution


class LlamaGenFormat(PeerFormat):
    """The ``llamagen`` tokenizer format. Context: none."""

    family = "LlamaGen"

    def detect(self, state: Mapping[str, torch.Tensor]) -> bool:
        return {"quant_conv.weight", "quantize.embedding.weight", "encoder.conv_out.weight"} <= state.keys()

    def build(
        self, state: Mapping[str, torch.Tensor], args: Mapping[str, Any], *, source: str,
        registry: Registry | None = None,
    ) -> torch.nn.Module:
        from glotok_bench.tokenizer.quantizers import VectorQuantizer

        autoencoder = conv_autoencoder_config(state, source, trunk_only=False)
        size, dim = StateMapper(state, source).get("quantize.embedding.weight").shape
        quantizer = VectorQuantizer.Config(
            codebook_size=size,
            code_dim=dim,
            distance="cosine" if args.get("codebook_l2_norm", True) else "euclidean",
            beta=float(args.get("commit_loss_beta", 0.25)),
        )
        resolution = peer_resolution(args, 2 ** (len(autoencoder.channel_multipliers) - 1), source)
        tokenizer = conv_tokenizer(resolution, autoencoder, ComponentChoice("vq", quantizer), registry)
        mapper = StateMapper(state, source)
        map_conv_autoencoder(mapper, autoencoder)
        mapper.copy("quant_conv", "quantizer.adapters.codes")
        mapper.copy("quantize.embedding", "quantizer.codebooks.codes.embedding", ("weight",))
        mapper.copy("post_quant_conv", "post_quant")
        load_mapped(tokenizer, mapper, ignored=IGNORED)
        return tokenizer
