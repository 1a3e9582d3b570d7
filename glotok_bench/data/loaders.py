"""Deterministic, shardable loading: each rank reads only its slice, in a seeded order.

At ImageNet scale nothing is held in memory: the sampler yields indices and the workers
decode images on demand. ``start`` lets a resumed run skip exactly the samples it had
already consumed in the interrupted epoch, so resume reproduces the uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from glotok_bench.data.imagefolder import SkippedImages, collate_images
from glotok_bench.errors import DataError


class ShardSampler(torch.utils.data.Sampler[int]):
    """Indices for one rank: a seeded per-epoch permutation (or identity), strided by rank."""

    def __init__(
        self,
        length: int,
        *,
        shuffle: bool,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.epoch, self.rank, self.world_size, self.start = epoch, rank, world_size, start

    def order(self) -> torch.Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.length, generator=generator)
        else:
            order = torch.arange(self.length)
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.start :].tolist())

    def __len__(self) -> int:
        return max(0, len(self.order()) - self.start)


def make_loader(
    dataset: torch.utils.data.Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    start: int = 0,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    sampler = ShardSampler(
        len(dataset), shuffle=shuffle, seed=seed, epoch=epoch, rank=rank, world_size=world_size, start=start
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_images,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=False,
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
