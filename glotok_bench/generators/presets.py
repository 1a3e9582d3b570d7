"""Named generator sizes: the paper's FAR-B/L and xAR-B/H, LlamaGen-B, and tiny CPU ones.

Each preset is a subclass of its generator whose ``Config`` only changes defaults, so it
can be registered as a component of its own (``name = "far-l"`` in a config file) and
still accepts any field as an override. The base classes' defaults already are FAR-B,
xAR-B and LlamaGen-B, so those presets are the base classes themselves.

Parameter counts (checked in tests/test_generators_presets.py by building on the meta
device) are against the figures the papers print, with the context they were printed
for: FAR with FQGAN's 16384 + 16384 codes, xAR with 16 channels, 1000 classes, 16x16.

Two printed sizes do not follow from the architecture alone:
- FAR on GloTok's 4096 + 12288 codes is printed as 415M too, but with one table of the
  right size per codebook it has 384M (FQGAN's code sizes both tables with one
  ``vocab_size``, so a 16384-row table per branch would give the printed figure).
- xAR-H's official configuration (20 + 20 blocks of width 1280, with its learned
  positions and encoder-decoder map) has 1.19B parameters; the papers print "1.1B". The
  same code gives xAR-B 172.6M, printed as 172M.
"""

from __future__ import annotations

from typing import Any

import attrs
from torch import nn

from glotok_bench.generators.ar import ARGenerator
from glotok_bench.generators.far import FARGenerator
from glotok_bench.generators.xar import XARGenerator


def with_defaults(base: type[nn.Module], name: str, doc: str, **defaults: Any) -> type[nn.Module]:
    """A subclass of ``base`` whose nested ``Config`` has other defaults (same fields, same types)."""
    attrs.resolve_types(base.Config)
    fields = {f.name: f for f in attrs.fields(base.Config)}
    unknown = set(defaults) - set(fields)
    if unknown:
        raise TypeError(f"{base.__name__}.Config has no fields {sorted(unknown)}")
    config = attrs.make_class(
        "Config",
        {key: attrs.field(default=value, type=fields[key].type) for key, value in defaults.items()},
        bases=(base.Config,),
        frozen=True,
        kw_only=True,
        slots=True,  # as attrs.frozen: a dict-based subclass cannot shadow the base's slots
    )
    config.__qualname__ = f"{name}.Config"
    config.__module__ = __name__
    cls = type(name, (base,), {"Config": config, "__doc__": doc, "__module__": __name__})
    return cls


# -- FAR -------------------------------------------------------------------------------------

FAR_B = FARGenerator  # 24 x 1024, 16 heads, 3 head layers (FQGAN's FAR-B)
FAR_L = with_defaults(
    FARGenerator,
    "FAR_L",
    "FAR-L (FQGAN): 36 x 1280, 20 heads, 4 head layers.",
    dim=1280,
    depth=36,
    heads=20,
    head_depth=4,
)
# The tiny CPU presets keep dropout and guidance off: a few hundred CPU steps neither
# overfit nor learn an unconditional model worth guiding with (grids set cfg_scale).
FAR_TINY = with_defaults(
    FARGenerator,
    "FAR_TINY",
    "A FAR that trains on 2 CPU cores (smoke tests, demo).",
    dim=64,
    depth=2,
    heads=4,
    head_depth=1,
    dropout=0.0,
    token_dropout=0.0,
    ffn_multiple_of=32,
    cfg_scale=1.0,
)

# -- xAR -------------------------------------------------------------------------------------

XAR_B = XARGenerator  # 8 + 8 x 768, 12 heads; 40 flow steps, guidance 2.7 (xAR's README)
XAR_H = with_defaults(
    XARGenerator,
    "XAR_H",
    "xAR-H: 20 + 20 x 1280, 16 heads.",
    dim=1280,
    depth=40,
    heads=16,
    # xAR's README evaluates xAR-H with 50 flow steps per cell and guidance 2.2.
    steps_first=50,
    steps_last=50,
    cfg_scale=2.2,
)
XAR_TINY = with_defaults(
    XARGenerator,
    "XAR_TINY",
    "An xAR that trains on 2 CPU cores; 4x4 cells.",
    dim=64,
    depth=2,
    heads=4,
    cell_size=4,
    dropout=0.0,
    attn_dropout=0.0,
    # Fewer flow steps, ramped down over the cells, to keep CPU sampling in seconds.
    steps_first=12,
    steps_last=6,
    cfg_scale=1.0,
)

# -- single-codebook baseline ------------------------------------------------------------------

AR_B = ARGenerator  # LlamaGen-B: 12 x 768, 12 heads
AR_TINY = with_defaults(
    ARGenerator,
    "AR_TINY",
    "A LlamaGen-style AR that trains on 2 CPU cores.",
    dim=64,
    depth=2,
    heads=4,
    dropout=0.0,
    token_dropout=0.0,
    ffn_multiple_of=32,
)


@attrs.frozen
class Preset:
    """A registered name, its class, and the printed size it must match (None: no paper figure)."""

    name: str
    cls: type[nn.Module]
    summary: str
    paper_params: float | None = None
    paper_context: dict[str, Any] = attrs.field(factory=dict)


_FQGAN_CODES = {
    "codebook_sizes": {"visual": 16_384, "semantic": 16_384},
    "grid_size": 16,
    "channels": 16,
    "num_classes": 1000,
}
_XAR_CONTEXT = {"codebook_sizes": {}, "grid_size": 16, "channels": 16, "num_classes": 1000}
_LLAMAGEN_CONTEXT = {
    "codebook_sizes": {"codes": 16_384},
    "grid_size": 16,
    "channels": 8,
    "num_classes": 1000,
}

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "far-b",
            FAR_B,
            "FAR-B (415M): 24x1024 LlamaGen decoder + 3-layer factorized head",
            415e6,
            _FQGAN_CODES,
        ),
        Preset(
            "far-l",
            FAR_L,
            "FAR-L (898M): 36x1280 decoder + 4-layer factorized head",
            898e6,
            _FQGAN_CODES,
        ),
        Preset("far-tiny", FAR_TINY, "tiny FAR for CPU tests and the demo"),
        Preset(
            "xar-b",
            XAR_B,
            "xAR-B (172M): 8+8 x 768 block-causal flow transformer, 8x8 cells",
            172e6,
            _XAR_CONTEXT,
        ),
        Preset(
            "xar-h",
            XAR_H,
            "xAR-H (1.1B): 20+20 x 1280 block-causal flow transformer, 8x8 cells",
            1.1e9,
            _XAR_CONTEXT,
        ),
        Preset("xar-tiny", XAR_TINY, "tiny xAR (4x4 cells) for CPU tests and the demo"),
        Preset(
            "ar-b", AR_B, "LlamaGen-B (111M) single-codebook AR baseline", 111e6, _LLAMAGEN_CONTEXT
        ),
        Preset("ar-tiny", AR_TINY, "tiny single-codebook AR for CPU tests"),
    )
}


def count_parameters(preset: str, **context: Any) -> int:
    """Parameters of ``preset`` with its default config, built on the meta device (no memory).

    ``context`` overrides the preset's paper context (e.g. GloTok's 4096 + 12288 codes).
    """
    import torch

    entry = PRESETS[preset]
    kwargs = {**entry.paper_context, **context}
    with torch.device("meta"):
        model = entry.cls(entry.cls.Config(), **kwargs)
    return sum(p.numel() for p in model.parameters())
