"""Resumable batch streams: the batch of global step s depends only on (seed, s).

A map-style dataset (``__len__`` + ``__getitem__`` yielding ``(image, label)``) is
shuffled per epoch with a generator seeded by (seed, epoch), so a resumed run sees
exactly the batches an uninterrupted run would. Any other iterable of batches is
consumed as given and fast-forwarded on resume (exact only if it is deterministic).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler, default_collate

from glotok_bench.data.imagefolder import SkippedImages, collate_images
from glotok_bench.errors import DataError


class ResumableBatchSampler(Sampler[list[int]]):
    """Index lists for steps start_step, start_step+1, ... (this rank's share of each).

    The global batch of step s is slice s % steps_per_epoch of epoch s // steps_per_epoch's
    permutation; rank r takes the r-th contiguous part. A dataset smaller than one batch
    is repeated (several permutations back to back) so any size trains.
    """

    def __init__(
        self,
        length: int,
        batch_size: int,
        *,
        seed: int,
        start_step: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        if length <= 0:
            raise DataError("the training dataset is empty")
        if batch_size % world_size:
            raise DataError(f"batch size {batch_size} is not divisible by {world_size} ranks")
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size
        self.repeats = -(-batch_size // length)  # permutations per epoch
        self.steps_per_epoch = max(1, length * self.repeats // batch_size)

    def _epoch(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.cat(
            [torch.randperm(self.length, generator=generator) for _ in range(self.repeats)]
        )

    def __iter__(self) -> Iterator[list[int]]:
        per_rank = self.batch_size // self.world_size
        epoch, within = divmod(self.start_step, self.steps_per_epoch)
        while True:
            order = self._epoch(epoch)
            for i in range(within, self.steps_per_epoch):
                start = i * self.batch_size + self.rank * per_rank
                yield order[start : start + per_rank].tolist()
            epoch, within = epoch + 1, 0

    def __len__(self) -> int:  # an endless stream; DataLoader only needs a number
        return 2**62


def _collate(samples: list[Any]) -> Any:
    # glotok datasets yield (image | None, label, index, problem) so unreadable files can be
    # dropped per batch; anything else is collated as PyTorch would.
    if samples and isinstance(samples[0], tuple) and len(samples[0]) == 4:
        return collate_images(samples)
    return default_collate(samples)


def _readable(batches: Iterable[Any], skipped: SkippedImages | None) -> Iterator[torch.Tensor]:
    """Image tensors of the batches; batches whose every image was unreadable are dropped."""
    for batch in batches:
        if isinstance(batch, dict):
            if skipped is not None:
                skipped.add(batch)
            if len(batch["images"]) == 0:
                continue
            yield batch["images"]
        else:
            yield _images(batch)


def _images(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise DataError(
        f"a training batch must be images [B,3,H,W] or (images, labels), got {type(batch).__name__}"
    )


def image_batches(
    data: Any,
    *,
    batch_size: int,
    seed: int,
    start_step: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
    skipped: SkippedImages | None = None,
) -> Iterator[torch.Tensor]:
    """An endless iterator of this rank's image batches [b, 3, H, W], from ``start_step`` on.

    Unreadable images are left out of their batch and listed in ``skipped``.
    """
    if (
        hasattr(data, "__getitem__")
        and hasattr(data, "__len__")
        and not isinstance(data, torch.Tensor)
    ):
        sampler = ResumableBatchSampler(
            len(data),
            batch_size,
            seed=seed,
            start_step=start_step,
            rank=rank,
            world_size=world_size,
        )
        loader = DataLoader(
            data,
            batch_sampler=sampler,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            collate_fn=_collate,
            # The loader draws its workers' base seed when iterated: from its own generator,
            # not the global one, so a resumed run's global RNG matches the uninterrupted run's.
            generator=torch.Generator().manual_seed(seed),
        )
        return _readable(loader, skipped)
    if not isinstance(data, Iterable):
        raise DataError(
            f"training data must be a Dataset or an iterable of batches, got {type(data).__name__}"
        )
    stream = (_images(batch) for batch in _cycle(data))
    return itertools.islice(stream, start_step, None)


def _cycle(data: Iterable[Any]) -> Iterator[Any]:
    while True:
        empty = True
        for item in data:
            empty = False
            yield item
        if empty:
            raise DataError("the training data yielded no batch")
