"""Public histogram relation API (GloTok Eq. 4-7, Algorithm 1).

``relation_histogram`` turns a codebook into the normalised, differentiable histogram of
its pairwise cosine similarities; ``histogram_relation_loss`` compares it with a teacher
histogram. Both compute in float32 whatever the input dtype or autocast state.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from glotok_bench.errors import ConfigError
from glotok_bench.histogram.kernel import KernelPlan, make_plan
from glotok_bench.histogram.reference import direct_relation_histogram
from glotok_bench.histogram.sampled import sampled_relation_histogram
from glotok_bench.histogram.streaming import streaming_relation_histogram

Normalize = Literal["sum", "l2"]
Method = Literal["streaming", "direct", "sampled"]
Reduction = Literal["sum", "mean"]

NORMALIZATIONS = ("sum", "l2")
METHODS = ("streaming", "direct", "sampled")
REDUCTIONS = ("sum", "mean")

# About 1600 pairs per bin: ~2.5% noise per bin, at a small fraction of the exact cost.
DEFAULT_SAMPLED_PAIRS = 1 << 16
# Added to the student histogram before the log: a bin no similarity reaches is exactly
# 0 in float32, and a teacher with mass there would otherwise make the loss infinite.
DEFAULT_EPS = 1e-10


def relation_histogram(
    codes: torch.Tensor,
    *,
    bins: int = 40,
    alpha: float | None = None,
    normalize: Normalize = "sum",
    method: Method = "streaming",
    tile: int | None = None,
    num_pairs: int = DEFAULT_SAMPLED_PAIRS,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Normalised Gaussian-smoothed histogram of a codebook's pairwise cosine similarities.

    Args:
        codes: ``[n, d]`` codebook, any float dtype, not yet normalised (rows are
            l2-normalised here, so the similarities are cosines).
        bins: number ``N`` of bin centres ``-1 + 2k / (N - 1)`` (Eq. 5).
        alpha: kernel weight in ``exp(-alpha (s - b)^2)`` (Eq. 6). ``None`` gives
            ``(N - 1)^2 / 8``, a kernel as wide as the bin spacing (see
            :mod:`glotok_bench.histogram.kernel` for why).
        normalize: ``"sum"`` divides by the total so the histogram is a distribution;
            ``"l2"`` divides by its L2 norm, literally as Algorithm 1 lines 4 and 7.
        method: ``"streaming"`` (exact, memory independent of ``n^2``), ``"direct"``
            (exact, materialises ``n^2 / 2 x N`` values; a test reference) or
            ``"sampled"`` (estimate from ``num_pairs`` random pairs).
        tile: block side for ``"streaming"``; default chosen by device.
        num_pairs, generator: pair sample size and RNG for ``"sampled"``.

    Returns:
        float32 ``[bins]`` on ``codes.device``, differentiable with respect to ``codes``.
        All pairs ``i <= j`` count, the ``n`` self-pairs included (Eq. 4).
    """
    plan = make_plan(bins, alpha)
    _check_choice("normalize", normalize, NORMALIZATIONS)
    _check_choice("method", method, METHODS)
    if codes.dim() != 2 or codes.shape[0] < 1:
        raise ConfigError(f"codes must have shape [n, d] with n >= 1, got {tuple(codes.shape)}")
    with torch.autocast(codes.device.type, enabled=False):
        unit_codes = F.normalize(codes.float(), dim=1)
        raw = _raw_histogram(unit_codes, plan, method, tile, num_pairs, generator)
        if normalize == "sum":
            return raw / raw.sum()
        return raw / torch.linalg.vector_norm(raw)


def check_teacher_histogram(teacher_hist: torch.Tensor) -> torch.Tensor:
    """``teacher_hist`` as a detached float32 histogram, or :class:`ConfigError` if it is
    not 1-D over >= 2 bins, finite and non-negative.

    The value checks wait for the device; a training loop calls this once on its fixed
    teacher histogram and then passes ``check_teacher=False`` to the loss each step.
    """
    _check_teacher_shape(teacher_hist)
    target = teacher_hist.detach().float()
    if not torch.isfinite(target).all() or (target < 0).any():
        raise ConfigError("teacher_hist must be finite and non-negative")
    return target


def _check_teacher_shape(teacher_hist: torch.Tensor) -> None:
    if teacher_hist.dim() != 1 or teacher_hist.shape[0] < 2:
        raise ConfigError(
            f"teacher_hist must be a 1-D histogram over >= 2 bins, got shape {tuple(teacher_hist.shape)}"
        )


def histogram_relation_loss(
    codes: torch.Tensor,
    teacher_hist: torch.Tensor,
    *,
    alpha: float | None = None,
    normalize: Normalize = "sum",
    reduction: Reduction = "sum",
    eps: float = DEFAULT_EPS,
    method: Method = "streaming",
    tile: int | None = None,
    num_pairs: int = DEFAULT_SAMPLED_PAIRS,
    generator: torch.Generator | None = None,
    check_teacher: bool = True,
) -> torch.Tensor:
    """``L_hist = KL(P_t || P_s)`` between a teacher histogram and the codebook's (Eq. 7).

    Args:
        codes: ``[n, d]`` student codebook (the tokenizer's semantic codes).
        teacher_hist: ``[bins]`` teacher histogram, normalised the same way (e.g. by
            :func:`relation_histogram` on the teacher codebook); it is detached, and
            its length sets the number of bins.
        reduction: ``"sum"`` over bins is the KL divergence; ``"mean"`` divides it by
            the number of bins, as ``torch.nn.functional.kl_div``'s default reduction
            would if Algorithm 1's ``KL(log P_s, P_t)`` was that call.
        eps: added to ``P_s`` inside the log.
        check_teacher: check the teacher's values (:func:`check_teacher_histogram`);
            that waits for the device, so per-step callers check once and pass False.
        Other arguments as in :func:`relation_histogram`.

    Returns:
        A float32 scalar, unweighted (the trainer applies ``lambda_hist``).
    """
    _check_choice("reduction", reduction, REDUCTIONS)
    if check_teacher:
        teacher_hist = check_teacher_histogram(teacher_hist)
    else:
        _check_teacher_shape(teacher_hist)
    target = teacher_hist.detach().float().to(codes.device)
    student = relation_histogram(
        codes,
        bins=target.shape[0],
        alpha=alpha,
        normalize=normalize,
        method=method,
        tile=tile,
        num_pairs=num_pairs,
        generator=generator,
    )
    # kl_div(log P_s, P_t) elementwise: P_t (log P_t - log P_s), with 0 log 0 = 0.
    pointwise = torch.xlogy(target, target) - target * torch.log(student + eps)
    return pointwise.sum() if reduction == "sum" else pointwise.mean()


def _raw_histogram(
    unit_codes: torch.Tensor,
    plan: KernelPlan,
    method: str,
    tile: int | None,
    num_pairs: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    if method == "streaming":
        return streaming_relation_histogram(unit_codes, plan, tile=tile)
    if method == "direct":
        return direct_relation_histogram(unit_codes, plan)
    if num_pairs < 1:
        raise ConfigError(f"num_pairs must be >= 1 for the sampled histogram, got {num_pairs}")
    return sampled_relation_histogram(unit_codes, plan, num_pairs=num_pairs, generator=generator)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"histogram {name} must be one of {', '.join(choices)}; got {value!r}")
