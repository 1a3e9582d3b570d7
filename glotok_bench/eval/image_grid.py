"""Rows of images written as one PNG grid, optionally with column labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from glotok_bench.atomic import atomic_write

_PAD = 2
_LABEL_HEIGHT = 14


def save_image_grid(
    rows: Sequence[Sequence[torch.Tensor]],
    path: str | Path,
    *,
    column_labels: Sequence[str] | None = None,
) -> Path:
    """``rows[i][j]``: image [3, H, W] in [-1, 1] (all one size) -> PNG at ``path`` (atomic)."""
    if not rows or not rows[0]:
        raise ValueError("an image grid needs at least one image")
    columns = len(rows[0])
    if any(len(row) != columns for row in rows):
        raise ValueError("every row of an image grid needs the same number of images")
    if column_labels is not None and len(column_labels) != columns:
        raise ValueError(f"{len(column_labels)} labels for {columns} columns")
    from glotok_bench.data.preprocess import to_uint8

    height, width = rows[0][0].shape[-2:]
    top = _LABEL_HEIGHT if column_labels else 0
    canvas = Image.new(
        "RGB",
        (columns * (width + _PAD) + _PAD, top + len(rows) * (height + _PAD) + _PAD),
        (255, 255, 255),
    )
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            if tuple(image.shape) != (3, height, width):
                raise ValueError(
                    f"grid image ({i}, {j}) is {tuple(image.shape)}, expected (3, {height}, {width})"
                )
            array = to_uint8(image).permute(1, 2, 0).cpu().numpy()
            canvas.paste(
                Image.fromarray(np.ascontiguousarray(array)),
                (_PAD + j * (width + _PAD), top + _PAD + i * (height + _PAD)),
            )
    if column_labels:
        draw = ImageDraw.Draw(canvas)
        for j, label in enumerate(column_labels):
            draw.text((_PAD + j * (width + _PAD), 1), label, fill=(0, 0, 0))
    return atomic_write(path, lambda handle: canvas.save(handle, format="PNG"))
