"""Built-in autoencoders: the VQGAN/LlamaGen conv encoder and decoder."""

from glotok_bench.hookspecs import hookimpl
from glotok_bench.registry import Component


@hookimpl
def glotok_autoencoders() -> list[Component]:
    return [
        Component("vqgan-conv", "glotok_bench.tokenizer.conv:ConvAutoencoder",
                  "VQGAN/LlamaGen conv encoder+decoder (ResNet blocks, GroupNorm, attention)"),
    ]
