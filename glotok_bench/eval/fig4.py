"""The paper's Fig. 4: reconstructions keeping part of the visual features, with and
without the semantic ones (discarded features set to 0).

One row per image: the original ("orig"), then the decoder output for semantic + visual
kept at each ratio ("S+V25" ... "S+V100"), then visual alone ("V25" ... "V100"). Labels
are short so they fit above 32 px thumbnails.

The paper does not say *which* visual features a ratio keeps. ``mode="channels"`` (the
default) keeps the first ceil(r * d) of the d visual channels at every position; with
d = 8 the four ratios keep 2/4/6/8 channels exactly. ``mode="positions"`` keeps all
channels at a seeded random fraction r of the token positions (the same positions for
every image). Either way the decoder sees the same latent layout as in a normal
reconstruction (``source``: with the residual added, as the decoder is trained).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from glotok_bench.eval.image_grid import save_image_grid
from glotok_bench.eval.options import RetentionConfig
from glotok_bench.eval.uniformity import branch_latents

RETENTION_MODES = ("channels", "positions")


DEFAULT_RETENTION = RetentionConfig()


def keep_mask(latents: torch.Tensor, ratio: float, mode: str, seed: int) -> torch.Tensor:
    """A {0, 1} mask broadcastable to latents [B, d, h, w] keeping ``ratio`` of them."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"retention ratio must lie in [0, 1], got {ratio}")
    _, d, h, w = latents.shape
    if mode == "channels":
        mask = torch.zeros(1, d, 1, 1, dtype=latents.dtype, device=latents.device)
        mask[:, : math.ceil(ratio * d - 1e-9)] = 1
        return mask
    if mode == "positions":
        order = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed))
        mask = torch.zeros(h * w, dtype=latents.dtype)
        mask[order[: math.ceil(ratio * h * w - 1e-9)]] = 1
        return mask.reshape(1, 1, h, w).to(latents.device)
    raise ValueError(f"retention mode must be one of {RETENTION_MODES}, got {mode!r}")


def _concat(tokenizer: Any, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    concat = getattr(tokenizer, "concat", None)
    return concat(parts) if concat is not None else torch.cat(list(parts.values()), dim=1)


@torch.inference_mode()
def retention_reconstructions(
    tokenizer: Any, images: torch.Tensor, config: RetentionConfig = DEFAULT_RETENTION
) -> tuple[list[str], torch.Tensor]:
    """Images [B, 3, H, W] in [-1, 1] -> (column labels, images [B, columns, 3, H, W])."""
    encoding = tokenizer.encode(images)
    names = list(encoding.branches)
    for branch in (config.semantic_branch, config.visual_branch):
        if branch not in names:
            raise ValueError(
                f"Fig. 4 needs a {branch!r} branch; this tokenizer has {', '.join(names)}"
            )
    parts = {name: branch_latents(encoding, name, config.source) for name in names}
    visual = parts[config.visual_branch]
    labels, columns = ["orig"], [images]
    for keep_semantic in (True, False):
        for ratio in config.ratios:
            edited = dict(parts)
            edited[config.visual_branch] = visual * keep_mask(
                visual, ratio, config.mode, config.seed
            )
            if not keep_semantic:
                edited[config.semantic_branch] = torch.zeros_like(parts[config.semantic_branch])
            columns.append(tokenizer.decode(_concat(tokenizer, edited)).float().clamp(-1, 1))
            labels.append(f"{'S+' if keep_semantic else ''}V{round(ratio * 100)}")
    return labels, torch.stack(columns, dim=1)


def save_retention_grid(
    tokenizer: Any,
    images: torch.Tensor,
    path: str | Path,
    config: RetentionConfig = DEFAULT_RETENTION,
) -> Path:
    """Write Fig. 4 for ``images`` [B, 3, H, W] as one PNG and return its path."""
    labels, grid = retention_reconstructions(tokenizer, images, config)
    rows: Sequence[Sequence[torch.Tensor]] = [list(row.cpu()) for row in grid]
    return save_image_grid(rows, path, column_labels=labels)
