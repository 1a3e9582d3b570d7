"""Sufficient statistics behind FID and IS: exact against direct formulas, exact merges."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glotok_bench.eval.frechet import frechet_distance
from glotok_bench.eval.inception_score import InceptionScoreAccumulator
from glotok_bench.eval.stats import MomentAccumulator


def _features(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Post-ReLU-like features with a non-zero mean, the case raw moments handle worst.
    return (
        (torch.randn(n, d, generator=g) @ torch.randn(d, d, generator=g) * 0.3 + 2.0).relu().float()
    )


def test_streamed_moments_match_numpy_mean_and_unbiased_covariance():
    x = _features(300, 12, 0)
    acc = MomentAccumulator(12)
    for chunk in x.split(37):
        acc.update(chunk)
    gaussian = acc.compute()
    assert gaussian.count == 300
    np.testing.assert_allclose(gaussian.mu.numpy(), x.double().numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(
        gaussian.sigma.numpy(), np.cov(x.double().numpy(), rowvar=False), rtol=1e-9, atol=1e-12
    )


def test_merging_workers_equals_one_pass_and_state_round_trips():
    x = _features(200, 8, 1)
    whole = MomentAccumulator(8)
    whole.update(x)
    first, second = MomentAccumulator(8), MomentAccumulator(8)
    first.update(x[:77])
    second.update(x[77:])
    restored = MomentAccumulator(8)
    restored.load_state_dict(second.state_dict())
    merged = first.merge(restored).compute()
    torch.testing.assert_close(merged.mu, whole.compute().mu, rtol=1e-13, atol=0)
    torch.testing.assert_close(merged.sigma, whole.compute().sigma, rtol=1e-11, atol=1e-14)


def test_moments_refuse_wrong_shapes_and_too_few_samples():
    acc = MomentAccumulator(4)
    with pytest.raises(ValueError):
        acc.update(torch.zeros(3, 5))
    acc.update(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="at least 2"):
        acc.compute()


def test_frechet_distance_matches_the_sqrtm_formula():
    from scipy import linalg

    g = torch.Generator().manual_seed(2)
    a, b = (
        torch.randn(6, 9, generator=g, dtype=torch.float64),
        torch.randn(6, 9, generator=g, dtype=torch.float64),
    )
    s1, s2 = a @ a.T / 9, b @ b.T / 9 + 0.1 * torch.eye(6, dtype=torch.float64)
    m1, m2 = (
        torch.randn(6, generator=g, dtype=torch.float64),
        torch.randn(6, generator=g, dtype=torch.float64),
    )
    covmean = linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expected = float(((m1 - m2) ** 2).sum() + s1.trace() + s2.trace() - 2 * np.trace(covmean))
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(m2, s2, m1, s1) == pytest.approx(expected, rel=1e-8)
    assert abs(frechet_distance(m1, s1, m1, s1)) < 1e-9


def test_inception_score_limits_and_formula():
    uniform = InceptionScoreAccumulator(5, splits=1)
    uniform.update(torch.zeros(40, 5))
    assert uniform.compute().mean == pytest.approx(1.0, abs=1e-12)

    # Confident, evenly spread predictions over k classes give IS = k.
    confident = InceptionScoreAccumulator(4, splits=1)
    confident.update(torch.eye(4).repeat(10, 1) * 60.0)
    assert confident.compute().mean == pytest.approx(4.0, rel=1e-6)

    logits = torch.randn(50, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    p = logits.softmax(1)
    q = p.mean(0, keepdim=True)
    direct = math.exp(float((p * (p.log() - q.log())).sum(1).mean()))
    acc = InceptionScoreAccumulator(7, splits=1)
    for chunk in logits.split(13):
        acc.update(chunk)
    assert acc.compute().mean == pytest.approx(direct, rel=1e-12)


def test_inception_score_splits_follow_dataset_indices_so_merges_are_exact():
    logits = torch.randn(60, 6, generator=torch.Generator().manual_seed(4))
    ids = torch.randperm(60, generator=torch.Generator().manual_seed(5))
    single = InceptionScoreAccumulator(6, splits=4)
    single.update(logits, ids)
    rank0, rank1 = InceptionScoreAccumulator(6, splits=4), InceptionScoreAccumulator(6, splits=4)
    rank0.update(logits[1::2], ids[1::2])
    rank1.update(logits[::2], ids[::2])
    merged = rank0.merge(rank1).compute()
    expected = single.compute()
    assert (merged.mean, merged.std, merged.count) == pytest.approx(
        (expected.mean, expected.std, 60), rel=1e-12
    )
    assert merged.splits == 4 and merged.std > 0
