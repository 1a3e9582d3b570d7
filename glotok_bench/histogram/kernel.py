"""The Gaussian-smoothed histogram's bins and kernel width (GloTok Eq. 5-6).

Bins sit at ``b_k = -1 + k * step`` with ``step = 2 / (N - 1)``, so -1 and 1 are both
centres. A similarity ``s`` adds ``exp(-alpha * (s - b_k)^2)`` to every bin ``k``.

The paper leaves ``alpha`` open. The default makes the kernel's standard deviation equal
to the bin spacing, ``sigma = step``, i.e. ``alpha = 1 / (2 step^2) = (N - 1)^2 / 8``
(190.125 for 40 bins). Why that width: by Poisson summation the total weight one pair
spreads over the bins, ``sum_k exp(-(s - b_k)^2 / (2 sigma^2))``, is a constant plus a
ripple of relative size ``2 exp(-2 pi^2 sigma^2 / step^2)`` that depends on where ``s``
falls between two centres. At ``sigma = step`` the ripple is 5e-9, below float32
resolution, so every pair carries the same mass wherever it lies and the loss exerts no
spurious pull toward bin centres; at ``sigma = step / 2`` it is already 1.4%, and
narrower kernels give pairs between bins almost no gradient. Wider kernels only blur
the histogram (``sigma = step`` is 0.05 in cosine units, small beside the ~0.35 spread
of cosine similarities between random 8-d codes).
"""

from __future__ import annotations

import math

import attrs

from glotok_bench.errors import ConfigError

# A kernel value below this fraction of its peak cannot change a float32 sum it is
# added to, so bins that far from a similarity are skipped (unit roundoff of float32).
FLOAT32_TOLERANCE = 2.0**-24

# exp() of the recurrence ratios stays finite up to this beta = alpha * step^2; beyond
# it the kernel is narrower than a tenth of a bin and the histogram is a set of spikes.
MAX_BETA = 80.0


def bin_step(bins: int) -> float:
    """Spacing between neighbouring bin centres, ``2 / (bins - 1)``."""
    return 2.0 / (bins - 1)


def default_alpha(bins: int) -> float:
    """The kernel weight giving ``sigma = bin spacing``: ``(bins - 1)^2 / 8``."""
    return (bins - 1) ** 2 / 8.0


@attrs.frozen
class KernelPlan:
    """Everything the histogram kernels need, validated once.

    ``window_low..window_high`` are the bin offsets, relative to ``floor`` of a
    similarity's position on the bin grid, whose kernel value can exceed ``tolerance``
    times its peak; the streaming kernel visits only those.
    """

    bins: int
    alpha: float
    tolerance: float = FLOAT32_TOLERANCE

    @property
    def step(self) -> float:
        return bin_step(self.bins)

    @property
    def beta(self) -> float:
        """``alpha`` in units of the bin grid: the kernel is ``exp(-beta (u - k)^2)``."""
        return self.alpha * self.step**2

    @property
    def window_low(self) -> int:
        reach = math.floor(math.sqrt(-math.log(self.tolerance) / self.beta))
        return -min(reach, self.bins - 1)

    @property
    def window_high(self) -> int:
        reach = math.floor(math.sqrt(-math.log(self.tolerance) / self.beta))
        return min(reach + 1, self.bins - 1)

    @property
    def window_size(self) -> int:
        return self.window_high - self.window_low + 1


def make_plan(bins: int, alpha: float | None, tolerance: float = FLOAT32_TOLERANCE) -> KernelPlan:
    """Validate the histogram options; ``alpha=None`` picks :func:`default_alpha`."""
    if not isinstance(bins, int) or bins < 2:
        raise ConfigError(f"histogram bins must be an integer >= 2, got {bins!r}")
    alpha = default_alpha(bins) if alpha is None else float(alpha)
    if not alpha > 0 or not math.isfinite(alpha):
        raise ConfigError(f"histogram alpha must be a positive number, got {alpha!r}")
    if not 0 < tolerance < 1:
        raise ConfigError(f"histogram kernel tolerance must lie in (0, 1), got {tolerance!r}")
    plan = KernelPlan(bins=bins, alpha=alpha, tolerance=tolerance)
    if plan.beta > MAX_BETA:
        raise ConfigError(
            f"histogram alpha={alpha} is too large for {bins} bins: the kernel "
            f"(sigma={1 / math.sqrt(2 * alpha):.3g}) is narrower than a tenth of the bin "
            f"spacing {plan.step:.3g}, so most similarities would fall between bins. "
            f"Use alpha <= {MAX_BETA / plan.step**2:.0f} (default {default_alpha(bins):.1f})."
        )
    return plan
