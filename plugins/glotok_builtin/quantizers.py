"""Built-in quantizers: single-codebook VQ and GloTok's dual (semantic + visual) quantizer."""

from glotok_bench.hookspecs import hookimpl
from glotok_bench.registry import Component


@hookimpl
def glotok_quantizers() -> list[Component]:
    return [
        Component("vq", "glotok_bench.tokenizer.quantizers:VectorQuantizer",
                  "single codebook (Euclidean or cosine), straight-through, L_Q with beta"),
        Component("dual", "glotok_bench.tokenizer.quantizers:DualQuantizer",
                  "two adapters + two codebooks, concatenated [semantic, visual]"),
    ]
