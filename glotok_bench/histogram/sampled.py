"""A sampled-pairs estimate of the relation histogram (an option, not the paper's method).

It draws ``num_pairs`` distinct-index pairs uniformly with replacement and scales their
kernel sums up to all ``n (n - 1) / 2`` pairs; the ``n`` self-pairs are added exactly.
The raw histogram is unbiased; the normalised one is a ratio of estimates, so it is
slightly biased and noisy (relative noise about ``1 / sqrt(pairs per bin)``).
"""

from __future__ import annotations

import torch

from glotok_bench.histogram.kernel import KernelPlan
from glotok_bench.histogram.reference import pair_kernel_sums


def sampled_relation_histogram(
    unit_codes: torch.Tensor,
    plan: KernelPlan,
    *,
    num_pairs: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Estimated un-normalised histogram of all pairs ``i <= j``: float32 ``[bins]``.

    ``unit_codes``: ``[n, d]`` l2-normalised rows. ``generator`` (on the codes' device)
    makes the draw reproducible.
    """
    n = unit_codes.shape[0]
    device = unit_codes.device
    self_pairs = pair_kernel_sums((unit_codes * unit_codes).sum(1), plan)
    if n < 2:
        return self_pairs
    first = torch.randint(n, (num_pairs,), device=device, generator=generator)
    # Uniform over the n - 1 other indices: draw from 0..n-2 and skip over `first`.
    second = torch.randint(n - 1, (num_pairs,), device=device, generator=generator)
    second = second + (second >= first).long()
    similarities = (unit_codes[first] * unit_codes[second]).sum(-1)
    scale = n * (n - 1) / 2 / num_pairs
    return self_pairs + scale * pair_kernel_sums(similarities, plan)
