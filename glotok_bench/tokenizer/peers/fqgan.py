"""FQGAN's dual-codebook VQModel (``tokenizer/vq_model_dual.py``: VQ-16, VQ-8) as a tokenizer.

The shared encoder trunk (conv_in, conv_blocks, mid) feeds a semantic and a visual head,
each a transformer adapter + norm + 3x3 conv + 1x1 ``quant_conv`` into its own
l2-normalised codebook: our ``vqgan-conv`` autoencoder with ``encoder_output = "trunk"``
and the ``dual`` quantizer with ``adapter.kind = "transformer"`` (the same modules our
paper-scale presets train). FQGAN decodes ``cat([visual, semantic])``; ours concatenates
[semantic, visual], so the input channels of ``post_quant_conv`` are swapped to match.
``feat_pred_head`` (CLIP feature prediction) is training-only and is not loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from glotok_bench.config import ComponentChoice
from glotok_bench.errors import CheckpointError
from glotok_bench.registry import Registry
from glotok_bench.tokenizer.adapters import AdapterConfig
from glotok_bench.tokenizer.peers.base import PeerFormat, conv_tokenizer
from glotok_bench.tokenizer.peers.llamagen import peer_resolution
from glotok_bench.tokenizer.peers.mapping import (
    StateMapper,
    conv_autoencoder_config,
    load_mapped,
    map_conv_autoencoder,
)

IGNORED = ("feat_pred_head.", "quantize_sem.codebook_used", "quantize_vis.codebook_used")
# FQGAN's FactorizedAdapter fixes 8 heads in code; the shapes cannot tell.
FQGAN_ADAPTER_HEADS = 8
# (FQGAN's key suffix, head module prefix, our branch)
BRANCHES = (("sem", "semantic_head", "semantic"), ("vis", "visual_head", "visual"))
BLOCK_PARAMETERS = (
    "ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
    "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
    "mlp.c_proj.weight", "mlp.c_proj.bias",
)


def adapter_config(state: Mapping[str, torch.Tensor], source: str) -> AdapterConfig:
    """The transformer adapter FQGAN's semantic head has (both heads must agree)."""
    mapper = StateMapper(state, source)
    positions, width = mapper.get("encoder.semantic_head.0.positional_embedding").shape
    grid = math.isqrt(positions)
    depth = len({k.split(".")[4] for k in state if k.startswith("encoder.semantic_head.0.transformer.")})
    hidden = mapper.get("encoder.semantic_head.0.transformer.0.mlp.c_fc.weight").shape[0]
    if grid * grid != positions:
        raise CheckpointError(f"{source}: the adapter's {positions} positions are not a square grid")
    return AdapterConfig(
        kind="transformer",
        depth=depth,
        heads=FQGAN_ADAPTER_HEADS,
        mlp_ratio=hidden / width,
        grid_size=grid,
        head_channels=mapper.get("encoder.conv_out_sem.weight").shape[0],
    )


class FQGANDualFormat(PeerFormat):
    """The ``fqgan-dual`` tokenizer format. Context: none."""

    family = "FQGAN-Dual"

    def detect(self, state: Mapping[str, torch.Tensor]) -> bool:
        return {
            "quantize_sem.embedding.weight", "quantize_vis.embedding.weight",
            "encoder.semantic_head.0.positional_embedding", "quant_conv_vis.weight",
        } <= state.keys()

    def build(
        self, state: Mapping[str, torch.Tensor], args: Mapping[str, Any], *, source: str,
        registry: Registry | None = None,
    ) -> torch.nn.Module:
        from glotok_bench.tokenizer.quantizers import DualQuantizer

        autoencoder = conv_autoencoder_config(state, source, trunk_only=True)
        adapter = adapter_config(state, source)
        mapper = StateMapper(state, source)
        semantic_size, dim = mapper.get("quantize_sem.embedding.weight").shape
        visual_size, visual_dim = mapper.get("quantize_vis.embedding.weight").shape
        if visual_dim != dim:
            raise CheckpointError(f"{source}: code dims differ (semantic {dim}, visual {visual_dim})")
        downsampling = 2 ** (len(autoencoder.channel_multipliers) - 1)
        resolution = adapter.grid_size * downsampling
        if args.get("image_size") and peer_resolution(args, downsampling, source) != resolution:
            raise CheckpointError(
                f"{source}: args.image_size {args['image_size']} does not match the adapters' "
                f"{adapter.grid_size}x{adapter.grid_size} grid at {downsampling}x downsampling"
            )
        quantizer = DualQuantizer.Config(
            semantic_size=semantic_size,
            visual_size=visual_size,
            code_dim=dim,
            distance="cosine" if args.get("codebook_l2_norm", True) else "euclidean",
            beta=float(args.get("commit_loss_beta", 0.25)),
            adapter=adapter,
        )
        tokenizer = conv_tokenizer(resolution, autoencoder, ComponentChoice("dual", quantizer), registry)
        map_conv_autoencoder(mapper, autoencoder)
        for suffix, head, branch in BRANCHES:
            src, dst = f"encoder.{head}.0", f"quantizer.adapters.{branch}"
            for name in ("positional_embedding", "ln_pre.weight", "ln_pre.bias", "ln_post.weight", "ln_post.bias"):
                mapper.out[f"{dst}.transformer.{name}"] = mapper.get(f"{src}.{name}")
            for i in range(adapter.depth):
                for name in BLOCK_PARAMETERS:
                    mapper.out[f"{dst}.transformer.blocks.{i}.{name}"] = mapper.get(f"{src}.transformer.{i}.{name}")
            mapper.copy(f"encoder.norm_out_{suffix}", f"{dst}.norm")
            mapper.copy(f"encoder.conv_out_{suffix}", f"{dst}.conv_out")
            mapper.copy(f"quant_conv_{suffix}", f"{dst}.project")
            mapper.copy(f"quantize_{suffix}.embedding", f"quantizer.codebooks.{branch}.embedding", ("weight",))
        # FQGAN's decoder input is [visual (dim), semantic (dim)]; ours is [semantic, visual].
        weight = mapper.get("post_quant_conv.weight")
        mapper.out["post_quant.weight"] = torch.cat([weight[:, dim:], weight[:, :dim]], dim=1)
        mapper.out["post_quant.bias"] = mapper.get("post_quant_conv.bias")
        load_mapped(tokenizer, mapper, ignored=IGNORED)
        return tokenizer
