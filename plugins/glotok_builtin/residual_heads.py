"""Built-in residual heads (GloTok Eq. 8-12)."""

from glotok_bench.hookspecs import hookimpl
from glotok_bench.registry import Component


@hookimpl
def glotok_residual_heads() -> list[Component]:
    return [
        Component("transformer", "glotok_bench.tokenizer.residual:TransformerResidualHead",
                  "one transformer block per branch predicting Z - Z_hat"),
        Component("none", "glotok_bench.tokenizer.residual:NoResidualHead",
                  "no residual: the decoder sees the quantized features"),
    ]
