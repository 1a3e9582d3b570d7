"""Table 3 uniformity: the KDE-to-metrics step, the streaming sampler, the metric."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import glotok_bench
from glotok_bench.eval.batch import EvalBatch
from glotok_bench.eval.uniformity import LatentSampler, LatentUniformity


def test_public_api_scores_even_points_as_more_uniform_than_clustered_ones():
    rng = np.random.default_rng(0)
    even = rng.uniform(size=(1500, 2))
    clustered = np.concatenate([rng.normal(0, 0.05, (750, 2)), rng.normal(1, 0.3, (750, 2))])
    a, b = glotok_bench.density_uniformity(even), glotok_bench.density_uniformity(clustered)
    assert set(a) == {"density_cv", "normalized_entropy", "gini"}
    assert a["density_cv"] < b["density_cv"]
    assert a["gini"] < b["gini"]
    assert a["normalized_entropy"] > b["normalized_entropy"]
    # Uniform points land where the paper's tokenizers do (0.22 / 0.997 / 0.12).
    assert a["density_cv"] == pytest.approx(0.22, abs=0.04)
    assert a["normalized_entropy"] == pytest.approx(0.997, abs=0.002)
    assert a["gini"] == pytest.approx(0.12, abs=0.025)


def test_metrics_follow_their_definitions_on_the_kde_densities():
    from scipy.stats import gaussian_kde

    points = np.random.default_rng(1).normal(size=(200, 2)) * [3.0, 0.5]
    d = np.sort(gaussian_kde(points.T)(points.T))
    n = len(d)
    p = d / d.sum()
    expected = {
        "density_cv": d.std() / d.mean(),
        "normalized_entropy": -(p * np.log2(p)).sum() / np.log2(n),
        "gini": ((2 * np.arange(1, n + 1) - n - 1) * d).sum() / (n * d.sum()),
    }
    result = glotok_bench.density_uniformity(points)
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, rel=1e-10)
    # A KDE with Scott's bandwidth is affine-equivariant: rescaling the embedding changes
    # every density by one factor, which none of the three metrics may notice.
    moved = glotok_bench.density_uniformity(points * 7.0 + 3.0)
    for name in expected:
        assert moved[name] == pytest.approx(result[name], rel=1e-9)


def test_density_uniformity_refuses_other_shapes():
    with pytest.raises(ValueError):
        glotok_bench.density_uniformity(np.zeros((10, 3)))


def test_sampler_choice_depends_on_dataset_indices_not_on_batching_or_workers():
    latents = torch.randn(50, 8, 4, 4, generator=torch.Generator().manual_seed(0))
    ids = torch.arange(50)
    one_pass = LatentSampler(30, repeats=2, seed=42, draws_per_image=2)
    one_pass.update(latents, ids)
    worker_a, worker_b = (
        LatentSampler(30, repeats=2, seed=42, draws_per_image=2) for _ in range(2)
    )
    for start in range(0, 50, 7):  # interleaved shards, small uneven batches
        target = worker_a if (start // 7) % 2 else worker_b
        target.update(latents[start : start + 7], ids[start : start + 7])
    merged = worker_a.merge(worker_b)
    for r in range(2):
        torch.testing.assert_close(merged.vectors[r], one_pass.vectors[r], rtol=0, atol=0)
        np.testing.assert_allclose(merged.standardised(r), one_pass.standardised(r), rtol=1e-12)
    assert one_pass.vectors[0].shape == (30, 8)
    assert not torch.equal(one_pass.vectors[0], one_pass.vectors[1])  # repeats resample


def test_sampler_standardises_with_statistics_over_every_position():
    latents = torch.randn(40, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * torch.tensor(
        [1.0, 5.0, 0.1]
    ).view(1, 3, 1, 1) + torch.tensor([10.0, -2.0, 0.0]).view(1, 3, 1, 1)
    sampler = LatentSampler(640, repeats=1, seed=0, draws_per_image=16)
    sampler.update(latents)
    everything = sampler.standardised(0)  # 16 draws x 40 images, with repeats of positions
    assert np.abs(everything.mean(0)).max() < 0.3
    assert np.allclose(everything.std(0), 1.0, atol=0.2)


def test_uniformity_metric_reports_mean_and_spread_over_repeats():
    branches = {"semantic": torch.randn(60, 8, 4, 4, generator=torch.Generator().manual_seed(2))}
    config = LatentUniformity.Config(
        samples=80, repeats=2, draws_per_image=2, perplexity=10.0, tsne_iterations=250
    )
    metric = LatentUniformity(
        config, codebook_sizes={"semantic": 16, "visual": 48}, data_protocol={"split": "val"}
    )
    for start in range(0, 60, 20):
        encoding = SimpleNamespace(branches={"semantic": branches["semantic"][start : start + 20]})
        metric.update(EvalBatch(encoding=encoding, sample_ids=torch.arange(start, start + 20)))
    results = metric.compute()
    cv = results["uniformity/density_cv"]
    assert cv["protocol"]["branch"] == "semantic" and cv["protocol"]["points"] == 80
    assert len(cv["protocol"]["per_repeat"]) == 2
    assert cv["value"] == pytest.approx(np.mean(cv["protocol"]["per_repeat"]))
    assert results["uniformity/density_cv_std"]["value"] > 0  # t-SNE seeds and samples differ
    assert 0.9 < results["uniformity/normalized_entropy"]["value"] <= 1.0
