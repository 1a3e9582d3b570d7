"""k-means in torch: Lloyd when the data fit one pass, mini-batch (Sculley 2010) otherwise.

Euclidean, initialised from k distinct random samples, as in VQGAN-LC's codebook
recipe (its per-class clustering used a torch Lloyd k-means with random init). The
feature matrix may stay on the CPU; batches and centres live on ``device``.
"""

from __future__ import annotations

import torch

from glotok_bench.errors import ConfigError

# Rows per assignment chunk are chosen so the chunk x k score matrix stays near this
# many floats (256 MB in float32), whatever k is.
_SCORE_BUDGET = 1 << 26


def kmeans(
    features: torch.Tensor,
    k: int,
    *,
    iterations: int = 50,
    batch_size: int = 0,
    seed: int = 0,
    device: torch.device | str | None = None,
    tolerance: float = 1e-6,
) -> torch.Tensor:
    """Cluster ``features`` ``[N, D]`` into ``k`` centres: float32 ``[k, D]`` on ``device``.

    ``batch_size = 0`` (or ``>= N``) runs full-batch Lloyd iterations, stopping early when
    no centre moves by more than ``tolerance`` (relative to the data's scale). Otherwise
    each iteration draws ``batch_size`` random points and moves each centre toward the
    mean of its points with step ``1 / (points it has seen)``. A centre that never wins a
    point keeps its initial sample, so every centre is a plausible feature.
    """
    n = features.shape[0]
    if features.dim() != 2:
        raise ConfigError(f"k-means needs features [N, D], got shape {tuple(features.shape)}")
    if not 1 <= k <= n:
        raise ConfigError(f"k-means cannot make {k} centres from {n} feature vectors")
    device = torch.device(device) if device is not None else features.device
    generator = torch.Generator().manual_seed(seed)
    centres = features[torch.randperm(n, generator=generator)[:k]].to(device, torch.float32)
    if batch_size <= 0 or batch_size >= n:
        return _lloyd(features, centres, iterations, tolerance)
    return _minibatch(features, centres, iterations, batch_size, generator)


def assign(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre for each point: ``argmax(x.c - |c|^2 / 2)``, chunked."""
    half_norms = 0.5 * centres.square().sum(1)
    rows = max(1, _SCORE_BUDGET // centres.shape[0])
    labels = []
    for start in range(0, points.shape[0], rows):
        chunk = points[start : start + rows].to(centres.device, torch.float32)
        labels.append((chunk @ centres.T - half_norms).argmax(1))
    return torch.cat(labels)


def _lloyd(
    features: torch.Tensor, centres: torch.Tensor, iterations: int, tolerance: float
) -> torch.Tensor:
    k, dim = centres.shape
    scale = centres.square().sum(1).mean().sqrt().clamp_min(1e-12)
    for _ in range(iterations):
        sums = torch.zeros(k, dim, device=centres.device)
        counts = torch.zeros(k, device=centres.device)
        rows = max(1, _SCORE_BUDGET // k)
        for start in range(0, features.shape[0], rows):
            chunk = features[start : start + rows].to(centres.device, torch.float32)
            labels = assign(chunk, centres)
            sums.index_add_(0, labels, chunk)
            counts += torch.bincount(labels, minlength=k)
        won = counts > 0
        updated = centres.clone()
        updated[won] = sums[won] / counts[won, None]
        shift = (updated - centres).norm(dim=1).max() / scale
        centres = updated
        if shift <= tolerance:
            break
    return centres


def _minibatch(
    features: torch.Tensor,
    centres: torch.Tensor,
    iterations: int,
    batch_size: int,
    generator: torch.Generator,
) -> torch.Tensor:
    k = centres.shape[0]
    seen = torch.zeros(k, device=centres.device)
    for _ in range(iterations):
        index = torch.randint(features.shape[0], (batch_size,), generator=generator)
        batch = features[index].to(centres.device, torch.float32)
        labels = assign(batch, centres)
        counts = torch.bincount(labels, minlength=k).float()
        sums = torch.zeros_like(centres).index_add_(0, labels, batch)
        seen += counts
        won = counts > 0
        # Moving by counts/seen toward the batch mean equals Sculley's per-point updates
        # with learning rate 1/seen applied in one step.
        rate = counts[won] / seen[won]
        centres[won] += rate[:, None] * (sums[won] / counts[won, None] - centres[won])
    return centres
