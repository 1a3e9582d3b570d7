"""Built-in generators: FAR (two codebooks), xAR (continuous cells) and the single-codebook
AR baseline, in the paper's sizes and tiny CPU sizes.

The presets are declared once, in :mod:`glotok_bench.generators.presets` (reading that
table imports no torch); every one of them is registered here under its name.
"""

from glotok_bench.generators.presets import PRESETS
from glotok_bench.hookspecs import hookimpl
from glotok_bench.registry import Component


@hookimpl
def glotok_generators() -> list[Component]:
    return [Component(preset.name, preset.target, preset.summary) for preset in PRESETS.values()]
