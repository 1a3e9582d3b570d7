"""Figures rendered to PNG bytes that are identical on every run.

A bare ``Figure`` on an Agg canvas needs no display and touches no pyplot global state;
the PNG carries no "Software" chunk (it holds the matplotlib version) and no timestamp.
"""

from __future__ import annotations

import io
from typing import Any


def new_figure(width: float, height: float, dpi: int = 100) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
