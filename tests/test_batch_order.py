"""One "batch from (seed, step)" ordering, shared by the tokenizer and generator trainers."""

from __future__ import annotations

import itertools

import torch

from glotok_bench.batch_order import BatchOrder
from glotok_bench.generators.tokens import BatchStream
from glotok_bench.train.data import ResumableBatchSampler


def test_each_epoch_visits_every_item_once_and_carries_on_across_the_boundary():
    order = BatchOrder(10, 4, seed=3)
    stream = torch.cat([order.indices(step) for step in range(5)])  # 20 positions: 2 epochs
    assert sorted(stream[:10].tolist()) == list(range(10)) == sorted(stream[10:].tolist())
    assert not torch.equal(stream[:10], stream[10:])  # a fresh order each epoch


def test_a_batch_depends_only_on_seed_and_step_and_ranks_split_it():
    steps = [BatchOrder(7, 6, seed=1).indices(s) for s in range(6)]
    resumed = BatchOrder(7, 6, seed=1)
    assert all(torch.equal(resumed.indices(s), steps[s]) for s in (4, 2, 5))  # any order of calls
    halves = [BatchOrder(7, 6, seed=1, rank=r, world_size=3).indices(4) for r in range(3)]
    assert torch.equal(torch.cat(halves), steps[4])
    assert not torch.equal(BatchOrder(7, 6, seed=2).indices(4), steps[4])


def test_tokenizer_and_generator_trainers_draw_the_same_items():
    images = list(itertools.islice(iter(ResumableBatchSampler(9, 4, seed=5, start_step=0)), 7))
    tokens = BatchStream({"labels": torch.arange(9)}, 4, seed=5)
    assert images == [tokens.indices(step).tolist() for step in range(7)]
