"""The histogram of all code pairs, streamed over tiles of the similarity matrix.

Memory is ``O(tile^2 + n d)`` instead of ``O(n^2 bins)``: forward and backward both walk
the tiles ``(I, J), J >= I`` of ``C C^T``, and backward recomputes each tile rather than
storing anything pair-sized.

Work per pair is cut from ``bins`` exponentials to three. Writing a similarity as
``s = b_k + f * step`` (``b_k`` the bin centre just below it), its kernel value at bin
``k + m`` is ``g_m = exp(-beta (f - m)^2)`` with ``beta = alpha step^2``. Only the
offsets ``m`` in the window of :class:`~glotok_bench.histogram.kernel.KernelPlan` can
exceed float32 resolution (``-5..6`` at the default alpha), and walking outward from
``m = 0`` each value is its neighbour times a ratio that itself changes by the constant
factor ``exp(-2 beta)``::

    g_{m+1} = g_m * exp(2 beta f - beta (2m + 1)),   g_{m-1} = g_m * exp(-2 beta f + beta (2m - 1))

so one exponential starts ``g_0`` and one starts each direction's ratio. Walking away
from the peak keeps every intermediate below 1, so nothing overflows, and a value that
underflows is one the direct form would round to zero too. (Narrow kernels, whose window
is a few bins, take one exponential per bin instead; see ``RECURRENCE_MAX_BETA``.)

On CPU this runs at about 30 ns per pair forward and 40 ns backward on one core, versus
about 1 us for the direct form's 40 exponentials and their autograd graph.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch.autograd.function import once_differentiable

from glotok_bench.histogram.kernel import KernelPlan
from glotok_bench.histogram.reference import bin_centers, pair_kernel_sums

# Pairs per tile: small enough that a tile's per-pair tensors stay in the CPU's L2
# cache, large enough to hide the per-op dispatch cost. A GPU wants far bigger tiles.
CPU_TILE = 256
CUDA_TILE = 4096

# Above this beta (alpha * step^2) the window is at most six bins, so one exponential
# per bin costs little, while the recurrence's ratios exp(2 beta f - beta (2m + 1))
# have exponents of order beta whose float32 rounding no longer cancels to 1e-7.
RECURRENCE_MAX_BETA = 4.0


def default_tile(device: torch.device) -> int:
    return CUDA_TILE if device.type == "cuda" else CPU_TILE


def default_copies(device: torch.device) -> int:
    """How many copies of the histogram a tile's pairs are spread over.

    On a GPU every pair of a tile would otherwise atomically add into the same ~50 bins,
    serialising millions of atomics per bin; spread over 1024 copies (summed at the
    end) they rarely collide. A CPU scatter is sequential and needs one copy.
    """
    return 1024 if device.type == "cuda" else 1


def streaming_relation_histogram(
    unit_codes: torch.Tensor,
    plan: KernelPlan,
    *,
    tile: int | None = None,
    copies: int | None = None,
) -> torch.Tensor:
    """Un-normalised histogram of all pairs ``i <= j``, equal to the direct form.

    ``unit_codes``: ``[n, d]``, rows l2-normalised (computed in float32). Returns float32
    ``[bins]``, differentiable with respect to ``unit_codes``. ``tile`` is the side of the
    square blocks of ``C C^T`` processed at once and ``copies`` the number of histogram
    copies the forward scatters into (both default by device).
    """
    tile = default_tile(unit_codes.device) if tile is None else int(tile)
    copies = default_copies(unit_codes.device) if copies is None else int(copies)
    unit_codes = unit_codes.float()
    # The n self-pairs are cheap to do directly; their similarity is 1 except for a
    # zero code (normalised to zero), which the direct form counts at 0.
    self_pairs = pair_kernel_sums((unit_codes * unit_codes).sum(1), plan)
    return _StreamingDistinctPairs.apply(unit_codes, plan, tile, copies) + self_pairs


class _StreamingDistinctPairs(torch.autograd.Function):
    """Histogram of the pairs ``i < j`` and its gradient, one tile at a time."""

    @staticmethod
    def forward(
        ctx, unit_codes: torch.Tensor, plan: KernelPlan, tile: int, copies: int
    ) -> torch.Tensor:
        ctx.save_for_backward(unit_codes)
        ctx.plan, ctx.tile = plan, tile
        # Autocast would run the similarity matmul in bf16, whose 8-bit mantissa puts a
        # similarity several bins off; the whole histogram is float32 by design.
        with torch.autocast(unit_codes.device.type, enabled=False), _one_cpu_thread(unit_codes):
            return _histogram_forward(unit_codes, plan, tile, copies)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hist: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (unit_codes,) = ctx.saved_tensors
        with torch.autocast(unit_codes.device.type, enabled=False), _one_cpu_thread(unit_codes):
            grad = _histogram_backward(unit_codes, grad_hist.float(), ctx.plan, ctx.tile)
        return grad, None, None, None


@contextlib.contextmanager
def _one_cpu_thread(tensor: torch.Tensor) -> Iterator[None]:
    """Run the tile loop's small CPU ops on one thread.

    A tile's ops are tens of microseconds each: splitting them across threads gains
    nothing measurable when the cores are idle, and when another process holds a core
    every op waits at the OpenMP barrier, which made the loop 5-20x slower here.
    """
    if tensor.device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _histogram_forward(
    unit_codes: torch.Tensor, plan: KernelPlan, tile: int, copies: int
) -> torch.Tensor:
    device = unit_codes.device
    centers = bin_centers(plan.bins, device=device)
    padded_bins = plan.bins + plan.window_size - 1
    # Bins are summed in float64: scatter_add adds one pair at a time, and a float32 bin
    # holding thousands of pairs already rounds each new one at 1e-6 relative (the
    # direct form's pairwise sum does not); the conversion costs ~15% of the forward.
    # Pair p adds into copy p % copies of the histogram (see default_copies).
    hist = torch.zeros(copies * padded_bins, dtype=torch.float64, device=device)
    span = (copies - 1) * padded_bins + plan.bins
    values64 = spread = None
    decay = _recurrence_decay(plan, device)
    for block in _tiles(unit_codes, tile):
        cell, frac = _grid_positions(block.rows, block.cols, centers, plan)
        if values64 is None or values64.shape != frac.shape:
            values64 = torch.empty_like(frac, dtype=torch.float64)
            spread = torch.arange(frac.shape[0], device=device) % copies * padded_bins
        index = cell + spread if copies > 1 else cell
        for offset, values in _kernel_terms(frac, plan, block.weight, decay):
            start = offset - plan.window_low
            hist[start : start + span].scatter_add_(0, index, values64.copy_(values))
    hist = hist.view(copies, padded_bins).sum(0)
    return hist[-plan.window_low : -plan.window_low + plan.bins].float()


def _histogram_backward(
    unit_codes: torch.Tensor, grad_hist: torch.Tensor, plan: KernelPlan, tile: int
) -> torch.Tensor:
    # Bins outside 0..bins-1 were dropped in forward: their gradient is zero.
    padded_grad = torch.zeros(plan.bins + plan.window_size - 1, device=unit_codes.device)
    padded_grad[-plan.window_low : -plan.window_low + plan.bins] = grad_hist
    # d g_m / d s = -2 alpha (s - b_{k+m}) g_m and s - b_{k+m} = step (f - m).
    slope = -2.0 * plan.alpha * plan.step
    centers = bin_centers(plan.bins, device=unit_codes.device)
    grad_codes = torch.zeros_like(unit_codes)
    decay = _recurrence_decay(plan, unit_codes.device)
    for block in _tiles(unit_codes, tile):
        cell, frac = _grid_positions(block.rows, block.cols, centers, plan)
        weighted = torch.zeros_like(frac)  # sum_m G_{k+m} g_m
        weighted_offset = torch.zeros_like(frac)  # sum_m m G_{k+m} g_m
        for offset, values in _kernel_terms(frac, plan, block.weight, decay):
            grad_at_bin = _bin_view(padded_grad, offset, plan).index_select(0, cell)
            weighted.addcmul_(grad_at_bin, values)
            if offset:
                weighted_offset.addcmul_(grad_at_bin, values, value=offset)
        grad_sim = frac.mul_(weighted).sub_(weighted_offset).mul_(slope)
        grad_sim = grad_sim.view(block.rows.shape[0], block.cols.shape[0])
        # On a diagonal tile rows and cols are the same codes; the halved weights make
        # the two updates add up to one per unordered pair.
        grad_codes[block.row_slice] += grad_sim @ block.cols
        grad_codes[block.col_slice] += grad_sim.T @ block.rows
    return grad_codes


class _Tile(NamedTuple):
    row_slice: slice
    col_slice: slice
    rows: torch.Tensor
    cols: torch.Tensor
    weight: torch.Tensor | None


def _tiles(unit_codes: torch.Tensor, tile: int) -> Iterator[_Tile]:
    """Blocks of ``C C^T`` covering each unordered pair ``i < j`` once.

    Off-diagonal blocks count every pair (``weight`` None). A diagonal block holds each
    pair twice and the self-pairs once, so its flat ``weight`` is 1/2 off the diagonal
    and 0 on it.
    """
    n = unit_codes.shape[0]
    for row_start in range(0, n, tile):
        row_slice = slice(row_start, min(row_start + tile, n))
        rows = unit_codes[row_slice]
        size = rows.shape[0]
        weight = torch.full((size, size), 0.5, device=unit_codes.device)
        weight.fill_diagonal_(0.0)
        yield _Tile(row_slice, row_slice, rows, rows, weight.view(-1))
        for col_start in range(row_start + tile, n, tile):
            col_slice = slice(col_start, min(col_start + tile, n))
            yield _Tile(row_slice, col_slice, rows, unit_codes[col_slice], None)


def _grid_positions(
    rows: torch.Tensor, cols: torch.Tensor, centers: torch.Tensor, plan: KernelPlan
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat ``(k, f)`` of each similarity in the block: ``s = b_k + f * step``.

    ``f`` is taken from ``s - b_k``, not as ``(s + 1) / step - k``: near ``u = 39`` a
    float32 ``u`` is only good to 4e-6 bins, which the kernel's slope turns into a
    relative error of several 1e-6. ``k`` is clamped to a real bin so rounding beyond
    +-1 still indexes the padded histogram; ``f`` absorbs the rest, so values stay exact.
    """
    similarity = (rows @ cols.T).reshape(-1)
    cell = torch.add(similarity, 1.0).mul_(1.0 / plan.step).floor_().clamp_(0, plan.bins - 1).long()
    frac = similarity.sub_(centers.index_select(0, cell)).mul_(1.0 / plan.step)
    return cell, frac


def _recurrence_decay(plan: KernelPlan, device: torch.device) -> torch.Tensor:
    """``exp(-2 beta)`` as a 0-dim float32 tensor on ``device``, made once per pass.

    A tensor, not a Python float: a float operand is re-wrapped into a tensor on every
    call, which cost 7% of the loop. Filled on the device (``torch.full``), not copied
    from the host (``torch.tensor``), whose copy would stall a GPU's queue once per tile.
    """
    return torch.full((), math.exp(-2.0 * plan.beta), dtype=torch.float32, device=device)


def _kernel_terms(
    frac: torch.Tensor, plan: KernelPlan, weight: torch.Tensor | None, decay: torch.Tensor
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(m, weight * exp(-beta (f - m)^2))`` for each offset ``m`` of the window;
    ``decay`` is :func:`_recurrence_decay`'s tensor.

    The yielded tensor is reused for the next offset: consume it before advancing.
    """
    if plan.beta > RECURRENCE_MAX_BETA:
        yield from _kernel_terms_by_exp(frac, plan, weight)
        return
    beta = plan.beta
    peak = frac.square().mul_(-beta).exp_()
    if weight is not None:
        peak.mul_(weight)
    yield 0, peak
    for direction, last in ((1, plan.window_high), (-1, plan.window_low)):
        if last == 0:
            continue
        ratio = frac.mul(2.0 * beta * direction).sub_(beta).exp_()
        values = peak.clone()
        for offset in range(direction, last + direction, direction):
            values.mul_(ratio)
            yield offset, values
            ratio.mul_(decay)


def _kernel_terms_by_exp(
    frac: torch.Tensor, plan: KernelPlan, weight: torch.Tensor | None
) -> Iterator[tuple[int, torch.Tensor]]:
    """The same terms with one exponential each, for narrow kernels (few offsets)."""
    values = torch.empty_like(frac)
    for offset in range(plan.window_low, plan.window_high + 1):
        torch.sub(frac, offset, out=values).square_().mul_(-plan.beta).exp_()
        if weight is not None:
            values.mul_(weight)
        yield offset, values


def _bin_view(padded: torch.Tensor, offset: int, plan: KernelPlan) -> torch.Tensor:
    """The slice of a padded per-bin tensor where index ``k`` means bin ``k + offset``."""
    start = offset - plan.window_low
    return padded[start : start + plan.bins]
