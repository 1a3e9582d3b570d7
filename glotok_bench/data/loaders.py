"""Evaluation-order loading: the dataset in index order, each rank reading only its slice.

Nothing is held in memory at ImageNet scale: the sampler yields indices and the workers
decode images on demand. (Training batches come from the seeded, resumable sampler in
:mod:`glotok_bench.train.data`.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from glotok_bench.data.imagefolder import SkippedImages, collate_images
from glotok_bench.errors import DataError


class ShardSampler(torch.utils.data.Sampler[int]):
    """Indices ``rank, rank + world_size, ...``: disjoint slices that cover the dataset."""

    def __init__(self, length: int, *, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def make_loader(
    dataset: torch.utils.data.Dataset,
    *,
    batch_size: int,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ShardSampler(len(dataset), rank=rank, world_size=world_size),
        num_workers=num_workers,
        collate_fn=collate_images,
        pin_memory=pin_memory,
    )


def readable_batches(
    loader: torch.utils.data.DataLoader, skipped: SkippedImages
) -> Iterator[dict[str, Any]]:
    """Yield batches with at least one image, recording unreadable files in ``skipped``.

    Raises :class:`DataError` if a whole pass over the loader produced no image.
    """
    produced = False
    for batch in loader:
        skipped.add(batch)
        if len(batch["images"]) == 0:
            continue
        produced = True
        yield batch
    if not produced:
        raise DataError(
            f"no readable image in the dataset ({len(skipped.paths)} unreadable): "
            + "; ".join(skipped.paths[:5])
        )
