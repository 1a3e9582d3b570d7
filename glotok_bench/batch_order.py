"""Which dataset items make up training batch ``step``: one ordering for every trainer.

Position p of an endless stream is item ``perm_e[p mod N]`` with ``e = p // N`` and
``perm_e`` a permutation of the N items seeded by (seed, e): each epoch visits every
item once, in a fresh order, and nothing is dropped at an epoch's end. Global batch s is
positions ``[s * B, (s + 1) * B)``; rank r of W takes the r-th of W equal parts. So a
batch depends only on (seed, step), whatever happened before it: a run resumed at step s
sees exactly the batches an uninterrupted one would, and W ranks together see the batch
one process would. The tokenizer trainer (images) and the generator trainer (token sets)
both draw their batches here.
"""

from __future__ import annotations

import torch


def epoch_permutation(seed: int, epoch: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(order [count], generator state after it) of epoch ``epoch``, from (seed, epoch) only.

    The state lets draws that belong to an epoch (e.g. which augmented view each item
    shows) continue the same seeded stream: see :meth:`BatchOrder.epoch_generator`.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(count, generator=generator)
    return order, generator.get_state()


class BatchOrder:
    """Global batch ``step`` -> the dataset indices [B / W] this rank takes from it."""

    def __init__(self, count: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1):
        if count <= 0 or batch_size <= 0 or batch_size % world_size or not 0 <= rank < world_size:
            raise ValueError(
                f"need count > 0 and a batch size ({batch_size}) split evenly over {world_size} ranks "
                f"(rank {rank}); got count {count}"
            )
        self.count, self.batch_size, self.seed = count, batch_size, seed
        self.local = batch_size // world_size
        self.offset = rank * self.local
        self._epoch = -1
        self._order, self._state = torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.uint8)

    def _draw(self, epoch: int) -> None:
        if epoch != self._epoch:  # batches walk forward: keep the current epoch's order only
            self._order, self._state = epoch_permutation(self.seed, epoch, self.count)
            self._epoch = epoch

    def epoch_order(self, epoch: int) -> torch.Tensor:
        self._draw(epoch)
        return self._order

    def epoch_generator(self, epoch: int) -> torch.Generator:
        """A generator continuing epoch ``epoch``'s seeded stream right after its order."""
        self._draw(epoch)
        generator = torch.Generator()
        generator.set_state(self._state)
        return generator

    def positions(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(items [B / W], the epoch each was drawn in) of this rank's part of batch ``step``."""
        start = step * self.batch_size + self.offset
        positions = torch.arange(start, start + self.local)
        epochs = positions // self.count
        rows = torch.empty(self.local, dtype=torch.long)
        for epoch in epochs.unique().tolist():
            chosen = epochs == epoch
            rows[chosen] = self.epoch_order(epoch)[positions[chosen] % self.count]
        return rows, epochs

    def indices(self, step: int) -> torch.Tensor:
        """LongTensor [B / W]: this rank's items of global batch ``step``."""
        return self.positions(step)[0]
