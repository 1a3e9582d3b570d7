"""Teacher vs student relation histograms as one PNG (``glotok-bench teacher show``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from glotok_bench.histogram.api import histogram_relation_loss, relation_histogram
from glotok_bench.histogram.reference import bin_centers


def compare_histograms(
    teacher: torch.Tensor, students: Mapping[str, torch.Tensor], out: str | Path, *, bins: int = 40
) -> dict[str, float]:
    """Plot the teacher's and each student codebook's histogram; return KL(teacher || student)."""
    from glotok_bench.atomic import atomic_write_bytes
    from glotok_bench.plotting import new_figure, png_bytes

    with torch.no_grad():
        teacher_hist = relation_histogram(teacher.float(), bins=bins)
        centres = bin_centers(bins).cpu().numpy()
        figure = new_figure(7, 4, dpi=120)
        axis = figure.add_subplot()
        axis.plot(centres, teacher_hist.cpu().numpy(), "k-", lw=2.5, label=f"teacher ({teacher.shape[0]} codes)")
        kl = {}
        for name, codes in students.items():
            kl[name] = float(histogram_relation_loss(codes.float(), teacher_hist))
            hist = relation_histogram(codes.float(), bins=bins).cpu().numpy()
            axis.plot(centres, hist, lw=1.5, label=f"{name} ({codes.shape[0]} codes), KL {kl[name]:.4f}")
    axis.set_xlabel("cosine similarity of code pairs (i <= j)")
    axis.set_ylabel("share of pairs")
    axis.set_title("Relation histograms: teacher vs semantic codebooks")
    axis.legend(fontsize=7)
    atomic_write_bytes(out, png_bytes(figure))
    return kl
