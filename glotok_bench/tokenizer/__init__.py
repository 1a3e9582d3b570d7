"""The GloTok tokenizer: conv autoencoder, quantizers, residual heads, losses, checkpoints.

This package's ``__init__`` and :mod:`glotok_bench.tokenizer.config` import no torch, so
config loading and plugin listing stay fast. Its components are registered by the
built-in plugins ``glotok_builtin.autoencoders``, ``.quantizers`` and ``.residual_heads``.
"""

from __future__ import annotations


def standalone_registry():
    """A registry holding only the built-in tokenizer and generator plugins, without other
    entry points.

    For tests and benchmarks that must not depend on which third-party plugins are
    installed; runs should use ``glotok_bench.registry.get_registry()``.
    """
    import importlib

    from glotok_bench.registry import Registry, new_plugin_manager

    plugin_manager = new_plugin_manager()
    for name in ("autoencoders", "quantizers", "residual_heads", "generators", "tokenizer_formats"):
        plugin_manager.register(importlib.import_module(f"glotok_builtin.{name}"), name=f"builtin-{name}")
    return Registry(plugin_manager)
