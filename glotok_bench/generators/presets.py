"""Named generator sizes: the paper's FAR-B/L and xAR-B/H, LlamaGen-B, and tiny CPU ones.

Each preset is a subclass of its generator whose ``Config`` only changes defaults, so it
can be registered as a component of its own (``name = "far-l"`` in a config file) and
still accepts any field as an override. The base classes' defaults already are FAR-B,
xAR-B and LlamaGen-B, so those presets are the base classes themselves.

``PRESETS`` below is the one list of them: the built-in plugin registers every entry
(``glotok_builtin.generators``). Reading it imports no torch; a preset's class (module
attributes ``FAR_L``, ``XAR_TINY``, ...) is built on first use.

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

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from torch import nn

_BASES = {
    "far": "glotok_bench.generators.far:FARGenerator",
    "xar": "glotok_bench.generators.xar:XARGenerator",
    "ar": "glotok_bench.generators.ar:ARGenerator",
}


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


@attrs.frozen
class Preset:
    """A registered name, how its class is made, and the printed size it must match.

    ``attribute``: the module attribute holding the class; ``base``: "far", "xar" or
    "ar"; ``defaults``: its ``Config`` defaults that differ from the base's (none: the
    base class itself); ``paper_params``: the printed size (None: no paper figure).
    """

    name: str
    attribute: str
    base: str
    summary: str
    doc: str = ""
    defaults: dict[str, Any] = attrs.field(factory=dict)
    paper_params: float | None = None
    paper_context: dict[str, Any] = attrs.field(factory=dict)

    @property
    def target(self) -> str:
        """``"module:attribute"``, as a registry ``Component`` names its implementation."""
        return f"{__name__}:{self.attribute}"

    @property
    def cls(self) -> type[nn.Module]:
        return globals()[self.attribute] if self.attribute in globals() else __getattr__(self.attribute)


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
        # -- FAR -----------------------------------------------------------------------------
        Preset(
            "far-b",
            "FAR_B",  # 24 x 1024, 16 heads, 3 head layers (FQGAN's FAR-B)
            "far",
            "FAR-B (415M): 24x1024 LlamaGen decoder + 3-layer factorized head",
            paper_params=415e6,
            paper_context=_FQGAN_CODES,
        ),
        Preset(
            "far-l",
            "FAR_L",
            "far",
            "FAR-L (898M): 36x1280 decoder + 4-layer factorized head",
            "FAR-L (FQGAN): 36 x 1280, 20 heads, 4 head layers.",
            defaults=dict(
                dim=1280,
                depth=36,
                heads=20,
                head_depth=4,
            ),
            paper_params=898e6,
            paper_context=_FQGAN_CODES,
        ),
        # The tiny CPU presets keep dropout and guidance off: a few hundred CPU steps neither
        # overfit nor learn an unconditional model worth guiding with (grids set cfg_scale).
        Preset(
            "far-tiny",
            "FAR_TINY",
            "far",
            "tiny FAR for CPU tests and the demo",
            "A FAR that trains on 2 CPU cores (smoke tests, demo).",
            defaults=dict(
                dim=64,
                depth=2,
                heads=4,
                head_depth=1,
                dropout=0.0,
                token_dropout=0.0,
                ffn_multiple_of=32,
                cfg_scale=1.0,
            ),
        ),
        # -- xAR -----------------------------------------------------------------------------
        Preset(
            "xar-b",
            "XAR_B",  # 8 + 8 x 768, 12 heads; 40 flow steps, guidance 2.7 (xAR's README)
            "xar",
            "xAR-B (172M): 8+8 x 768 block-causal flow transformer, 8x8 cells",
            paper_params=172e6,
            paper_context=_XAR_CONTEXT,
        ),
        Preset(
            "xar-h",
            "XAR_H",
            "xar",
            "xAR-H (1.1B): 20+20 x 1280 block-causal flow transformer, 8x8 cells",
            "xAR-H: 20 + 20 x 1280, 16 heads.",
            defaults=dict(
                dim=1280,
                depth=40,
                heads=16,
                # xAR's README evaluates xAR-H with 50 flow steps per cell and guidance 2.2.
                steps_first=50,
                steps_last=50,
                cfg_scale=2.2,
            ),
            paper_params=1.1e9,
            paper_context=_XAR_CONTEXT,
        ),
        Preset(
            "xar-tiny",
            "XAR_TINY",
            "xar",
            "tiny xAR (4x4 cells) for CPU tests and the demo",
            "An xAR that trains on 2 CPU cores; 4x4 cells.",
            defaults=dict(
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
            ),
        ),
        # -- single-codebook baseline --------------------------------------------------------
        Preset(
            "ar-b",
            "AR_B",  # LlamaGen-B: 12 x 768, 12 heads
            "ar",
            "LlamaGen-B (111M) single-codebook AR baseline",
            paper_params=111e6,
            paper_context=_LLAMAGEN_CONTEXT,
        ),
        Preset(
            "ar-tiny",
            "AR_TINY",
            "ar",
            "tiny single-codebook AR for CPU tests",
            "A LlamaGen-style AR that trains on 2 CPU cores.",
            defaults=dict(
                dim=64,
                depth=2,
                heads=4,
                dropout=0.0,
                token_dropout=0.0,
                ffn_multiple_of=32,
            ),
        ),
    )
}

_BY_ATTRIBUTE = {p.attribute: p for p in PRESETS.values()}


def __getattr__(attribute: str) -> type[nn.Module]:
    """``FAR_L`` etc.: the preset's class, built (with torch) on first use, then kept."""
    preset = _BY_ATTRIBUTE.get(attribute)
    if preset is None:
        raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
    import importlib

    module_name, base_name = _BASES[preset.base].split(":")
    base = getattr(importlib.import_module(module_name), base_name)
    cls = with_defaults(base, preset.attribute, preset.doc, **preset.defaults) if preset.defaults else base
    globals()[attribute] = cls
    return cls


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
