"""Built-in semantic supervision: GloTok's global histogram loss, FQGAN-style local
InfoNCE against a frozen teacher, and none."""

from glotok_bench.hookspecs import hookimpl
from glotok_bench.registry import Component


@hookimpl
def glotok_semantic_supervision() -> list[Component]:
    return [
        Component("histogram", "glotok_bench.supervision.histogram:HistogramSupervision",
                  "global: KL between teacher and semantic-codebook relation histograms (Eq. 4-7)"),
        Component("local-infonce", "glotok_bench.supervision.local_infonce:LocalInfoNCESupervision",
                  "local (FQGAN-style): InfoNCE to a frozen CLIP/DINOv2 CLS token every batch"),
        Component("none", "glotok_bench.supervision.none:NoSupervision", "no semantic supervision"),
    ]
