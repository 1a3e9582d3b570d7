"""Built-in peer tokenizer checkpoint formats: LlamaGen's VQModel and FQGAN's dual VQModel."""

from glotok_bench.hookspecs import hookimpl
from glotok_bench.registry import Component


@hookimpl
def glotok_tokenizer_formats() -> list[Component]:
    return [
        Component("llamagen", "glotok_bench.tokenizer.peers.llamagen:LlamaGenFormat",
                  "LlamaGen VQModel (VQ-8, VQ-16) checkpoints, as saved by its vq_train.py"),
        Component("fqgan-dual", "glotok_bench.tokenizer.peers.fqgan:FQGANDualFormat",
                  "FQGAN dual-codebook VQModel (VQ-16, VQ-8), as saved by its vq_train_dual.py"),
    ]
