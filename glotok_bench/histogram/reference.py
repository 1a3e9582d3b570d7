"""The direct histogram: every pair against every bin, differentiated by autograd.

It materialises ``n (n + 1) / 2 x bins`` kernel values (about 21 GB in float32 at
n = 16384), so it is only for small codebooks and as the ground truth the streaming
kernel is tested against.
"""

from __future__ import annotations

import torch

from glotok_bench.histogram.kernel import KernelPlan


def bin_centers(bins: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Bin centres ``-1 + 2k / (bins - 1)``, ``k = 0..bins-1``: float32 ``[bins]``."""
    k = torch.arange(bins, device=device, dtype=torch.float32)
    return -1.0 + 2.0 * k / (bins - 1)


def pair_kernel_sums(similarities: torch.Tensor, plan: KernelPlan) -> torch.Tensor:
    """``sum_i exp(-alpha (s_i - b_k)^2)`` over a flat float32 ``[P]`` tensor: ``[bins]``."""
    centers = bin_centers(plan.bins, device=similarities.device)
    return torch.exp(-plan.alpha * (similarities[:, None] - centers) ** 2).sum(0)


def direct_relation_histogram(unit_codes: torch.Tensor, plan: KernelPlan) -> torch.Tensor:
    """Un-normalised histogram of all pairs ``i <= j`` (diagonal included), Eq. 4-6.

    ``unit_codes``: float32 ``[n, d]``, rows already l2-normalised. Returns ``[bins]``.
    """
    n = unit_codes.shape[0]
    rows, cols = torch.triu_indices(n, n, device=unit_codes.device)
    similarities = (unit_codes @ unit_codes.T)[rows, cols]
    return pair_kernel_sums(similarities, plan)
