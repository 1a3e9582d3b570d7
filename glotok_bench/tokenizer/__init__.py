"""The GloTok tokenizer: conv autoencoder, quantizers, residual heads, losses, checkpoints.

This package's ``__init__`` and :mod:`glotok_bench.tokenizer.config` import no torch, so
config loading and plugin listing stay fast. The component lists below are what the
built-in plugin modules return from their hooks; each target is imported only when used.
"""

from __future__ import annotations

from glotok_bench.registry import Component

AUTOENCODERS = [
    Component(
        "vqgan-conv",
        "glotok_bench.tokenizer.conv:ConvAutoencoder",
        "VQGAN/LlamaGen-style conv encoder and decoder (ResNet blocks, GroupNorm, attention).",
    ),
]

QUANTIZERS = [
    Component(
        "vq",
        "glotok_bench.tokenizer.quantizers:VectorQuantizer",
        "Single-codebook VQ (Euclidean or cosine), straight-through, L_Q with beta.",
    ),
    Component(
        "dual",
        "glotok_bench.tokenizer.quantizers:DualQuantizer",
        "Two adapters + two codebooks (semantic, visual), concatenated [semantic, visual].",
    ),
]

RESIDUAL_HEADS = [
    Component(
        "transformer",
        "glotok_bench.tokenizer.residual:TransformerResidualHead",
        "One transformer block per branch predicting Z - Z_hat (GloTok Eq. 8-12).",
    ),
    Component(
        "none",
        "glotok_bench.tokenizer.residual:NoResidualHead",
        "No residual: the decoder sees the quantized features as they are.",
    ),
]


class _TokenizerPlugin:
    """This package's components as a pluggy plugin (see :func:`standalone_registry`)."""

    from glotok_bench.hookspecs import hookimpl

    @hookimpl
    def glotok_autoencoders(self) -> list[Component]:
        return AUTOENCODERS

    @hookimpl
    def glotok_quantizers(self) -> list[Component]:
        return QUANTIZERS

    @hookimpl
    def glotok_residual_heads(self) -> list[Component]:
        return RESIDUAL_HEADS


def standalone_registry():
    """A registry holding only the tokenizer components above, without entry points.

    For tests and benchmarks that must run whether or not the package (and its built-in
    plugins) is installed; runs should use ``glotok_bench.registry.get_registry()``.
    """
    from glotok_bench.registry import Registry, new_plugin_manager

    plugin_manager = new_plugin_manager()
    plugin_manager.register(_TokenizerPlugin(), name="glotok-tokenizer")
    return Registry(plugin_manager)
