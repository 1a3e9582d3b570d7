"""Resumable batch streams: the batch of global step s depends only on (seed, s).

A map-style dataset (``__len__`` + ``__getitem__`` yielding ``(image, label)``) is
read in :mod:`glotok_bench.batch_order`'s order (a fresh permutation per epoch seeded by
(seed, epoch)), so a resumed run sees exactly the batches an uninterrupted run would.
Any other iterable of batches is consumed as given and fast-forwarded on resume (exact
only if it is deterministic).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler, default_collate

from glotok_bench.batch_order import BatchOrder
from glotok_bench.data.imagefolder import SkippedImages, collate_images
from glotok_bench.errors import ConfigError, DataError
from glotok_bench.train.augment import CROP_FLIP, AugmentedImages


class ResumableBatchSampler(Sampler[list[int]]):
    """Index lists for steps start_step, start_step+1, ... (this rank's share of each).

    The items of global step s are :class:`glotok_bench.batch_order.BatchOrder`'s, the
    ordering the generator trainer uses too: epochs of fresh permutations seeded by
    (seed, epoch), read as one endless stream, so any dataset size (even one smaller than
    a batch) trains and rank r takes the r-th contiguous part of each global batch.
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
        with_epochs: bool = False,
    ):
        if length <= 0:
            raise DataError("the training dataset is empty")
        if batch_size % world_size:
            raise DataError(f"batch size {batch_size} is not divisible by {world_size} ranks")
        self.order = BatchOrder(length, batch_size, seed=seed, rank=rank, world_size=world_size)
        self.start_step = start_step
        # (index, epoch) pairs instead of indices: the keys augmentation draws from.
        self.with_epochs = with_epochs

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            if self.with_epochs:
                items, epochs = self.order.positions(step)
                yield list(zip(items.tolist(), epochs.tolist(), strict=True))
            else:
                yield self.order.indices(step).tolist()
            step += 1

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
    augment: str = "none",
    crop_scale: tuple[float, float] = (1.0, 1.25),
) -> Iterator[torch.Tensor]:
    """An endless iterator of this rank's image batches [b, 3, H, W], from ``start_step`` on.

    Unreadable images are left out of their batch and listed in ``skipped``. ``augment =
    "crop-flip"`` crops and flips a map-style dataset's images afresh each epoch
    (:mod:`glotok_bench.train.augment`, keyed on (seed, epoch, index)); ``"none"`` reads
    them as the dataset gives them.
    """
    if (
        hasattr(data, "__getitem__")
        and hasattr(data, "__len__")
        and not isinstance(data, torch.Tensor)
    ):
        if augment not in ("none", CROP_FLIP):
            raise ConfigError(f"train.augment must be 'none' or '{CROP_FLIP}', got {augment!r}")
        if augment == CROP_FLIP:
            data = AugmentedImages(data, seed=seed, scale=crop_scale)
        sampler = ResumableBatchSampler(
            len(data),
            batch_size,
            seed=seed,
            start_step=start_step,
            rank=rank,
            world_size=world_size,
            with_epochs=augment == CROP_FLIP,
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
    if augment != "none":
        raise ConfigError(
            f"train.augment = {augment!r} needs a map-style dataset (it keys each image's "
            "crop on its index); this data is an iterable of batches: set train.augment = 'none'"
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
