"""Codebook usage and perplexity over the whole evaluation set."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from glotok_bench.eval.batch import EvalBatch
from glotok_bench.eval.usage import CodebookUsage


def _batch(**indices: torch.Tensor) -> EvalBatch:
    any_indices = next(iter(indices.values()))
    images = torch.zeros(any_indices.shape[0], 3, 8, 8)
    return EvalBatch(real=images, fake=images, encoding=SimpleNamespace(indices=indices))


def test_usage_and_perplexity_count_every_token_of_every_batch():
    metric = CodebookUsage(codebook_sizes={"semantic": 8, "visual": 4})
    # semantic: codes 0 and 1 only, equally often -> usage 2/8, perplexity 2.
    metric.update(
        _batch(
            semantic=torch.zeros(2, 2, 2, dtype=torch.long),
            visual=torch.arange(4).view(1, 2, 2).repeat(2, 1, 1),
        )
    )
    metric.update(
        _batch(
            semantic=torch.ones(2, 2, 2, dtype=torch.long),
            visual=torch.zeros(2, 2, 2, dtype=torch.long),
        )
    )
    results = metric.compute()
    assert results["usage/semantic"]["value"] == pytest.approx(2 / 8)
    assert results["perplexity/semantic"]["value"] == pytest.approx(2.0)
    assert results["usage/visual"]["value"] == 1.0
    # visual: code 0 appears 10 times, codes 1-3 twice each, out of 16 tokens.
    p = torch.tensor([10, 2, 2, 2], dtype=torch.float64) / 16
    assert results["perplexity/visual"]["value"] == pytest.approx(
        math.exp(-(p * p.log()).sum().item())
    )
    assert results["usage/visual"]["protocol"]["tokens"] == 16
    assert results["usage/visual"]["protocol"]["count"] == 4


def test_usage_merges_workers_and_rejects_bad_indices():
    first, second = (
        CodebookUsage(codebook_sizes={"codes": 5}),
        CodebookUsage(codebook_sizes={"codes": 5}),
    )
    first.update(_batch(codes=torch.tensor([[[0, 1]]])))
    second.update(_batch(codes=torch.tensor([[[2, 2]]])))
    assert first.merge(second).compute()["usage/codes"]["value"] == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="outside"):
        first.update(_batch(codes=torch.tensor([[[5]]])))
    with pytest.raises(ValueError, match="unknown codebooks"):
        first.update(_batch(other=torch.tensor([[[0]]])))
