"""glotok-bench: train, evaluate and compare GloTok and its peer image tokenizers.

The public API below is resolved lazily so that ``import glotok_bench`` (and the CLI)
start without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> "module:attribute"
_PUBLIC_API = {
    "relation_histogram": "glotok_bench.histogram.api:relation_histogram",
    "histogram_relation_loss": "glotok_bench.histogram.api:histogram_relation_loss",
    "density_uniformity": "glotok_bench.eval.uniformity:density_uniformity",
    "load_tokenizer": "glotok_bench.tokenizer.checkpoint:open_tokenizer",
}

__all__ = sorted(_PUBLIC_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    target = _PUBLIC_API.get(name)
    if target is None:
        raise AttributeError(f"module 'glotok_bench' has no attribute {name!r}")
    module_name, attribute = target.split(":")
    value = getattr(importlib.import_module(module_name), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC_API))
