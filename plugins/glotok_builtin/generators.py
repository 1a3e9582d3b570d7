"""Built-in generators: FAR (two codebooks), xAR (continuous cells) and the single-codebook
AR baseline, in the paper's sizes and tiny CPU sizes."""

from glotok_bench.hookspecs import hookimpl
from glotok_bench.registry import Component

_G = "glotok_bench.generators"


@hookimpl
def glotok_generators() -> list[Component]:
    return [
        Component("far-b", f"{_G}.far:FARGenerator", "FAR-B (415M): visual then semantic index per position"),
        Component("far-l", f"{_G}.presets:FAR_L", "FAR-L (898M)"),
        Component("far-tiny", f"{_G}.presets:FAR_TINY", "tiny FAR for CPU smoke runs"),
        Component("xar-b", f"{_G}.xar:XARGenerator", "xAR-B (172M): flow matching over 8x8 token cells"),
        Component("xar-h", f"{_G}.presets:XAR_H", "xAR-H (1.1B)"),
        Component("xar-tiny", f"{_G}.presets:XAR_TINY", "tiny xAR for CPU smoke runs"),
        Component("ar-b", f"{_G}.ar:ARGenerator", "LlamaGen-B (111M) over single-codebook indices"),
        Component("ar-tiny", f"{_G}.presets:AR_TINY", "tiny single-codebook AR for CPU"),
    ]
