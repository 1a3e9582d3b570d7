"""The histogram relation loss: streaming kernel vs the direct reference, and the API."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import glotok_bench
from glotok_bench.errors import ConfigError
from glotok_bench.histogram.kernel import default_alpha, make_plan
from glotok_bench.histogram.reference import bin_centers, direct_relation_histogram
from glotok_bench.histogram.streaming import streaming_relation_histogram


def _histograms_and_grads(codes: torch.Tensor, plan, tile: int, probe: torch.Tensor):
    """Raw histograms and d(probe . hist)/d codes for the direct and streaming forms."""
    results = []
    for compute in (
        lambda unit: direct_relation_histogram(unit, plan),
        lambda unit: streaming_relation_histogram(unit, plan, tile=tile),
    ):
        leaf = codes.clone().requires_grad_(True)
        hist = compute(F.normalize(leaf, dim=1))
        (grad,) = torch.autograd.grad((hist * probe).sum(), leaf)
        results.append((hist.detach(), grad))
    return results


def _codebooks():
    generator = torch.Generator().manual_seed(0)
    random = torch.randn(97, 8, generator=generator)
    # Off-diagonal similarities of exactly +1 and -1.
    duplicated = torch.cat([random[:20], random[:20], -random[:10]])
    clustered = torch.randn(1, 8, generator=generator) + 0.05 * torch.randn(
        60, 8, generator=generator
    )
    with_zero_row = torch.cat([random[:30], torch.zeros(1, 8)])
    return {
        "random": random,
        "duplicates-and-antipodes": duplicated,
        "clustered": clustered,
        "zero-row": with_zero_row,
        "single-code": random[:1],
        "two-codes": random[:2],
        "wide-codes": torch.randn(40, 300, generator=generator),
    }


@pytest.mark.parametrize("name", list(_codebooks()))
@pytest.mark.parametrize(
    ("alpha", "tile"),
    [(None, 32), (3.0, 17), (20000.0, 64), (default_alpha(40) / 4, 1000)],
    ids=["default", "wide-kernel", "narrow-kernel", "one-tile"],
)
def test_streaming_matches_direct_values_and_gradients(name, alpha, tile):
    codes = _codebooks()[name]
    plan = make_plan(40, alpha)
    probe = torch.randn(40, generator=torch.Generator().manual_seed(1))
    (direct, direct_grad), (streamed, streamed_grad) = _histograms_and_grads(
        codes, plan, tile, probe
    )
    # Skipped kernel tails are below 2^-24 of each pair's peak, so the histograms agree to
    # float32 precision of their total. A narrower kernel's steeper slope amplifies the
    # rounding of each similarity, which the two forms do differently: the tolerance grows
    # with that slope, i.e. with sqrt(alpha).
    conditioning = max(1.0, math.sqrt(plan.alpha / default_alpha(40)))
    total = direct.sum()
    torch.testing.assert_close(
        streamed / total, direct / total, rtol=1e-6, atol=2e-7 * conditioning
    )
    scale = direct_grad.abs().max()
    if scale < 1e-4:  # one code, or only self-pairs: the true gradient is 0
        assert streamed_grad.abs().max() < 1e-4
        return
    torch.testing.assert_close(
        streamed_grad / scale, direct_grad / scale, rtol=0, atol=2e-5 * conditioning
    )


def test_histogram_copies_for_gpu_scatter_change_nothing():
    # The CUDA layout (pairs spread over copies of the histogram) exercised on the CPU.
    plan = make_plan(40, None)
    unit = F.normalize(torch.randn(150, 8, generator=torch.Generator().manual_seed(2)), dim=1)
    single = streaming_relation_histogram(unit, plan, tile=40, copies=1)
    spread = streaming_relation_histogram(unit, plan, tile=40, copies=7)
    torch.testing.assert_close(spread, single, rtol=1e-6, atol=0)


def test_bins_include_both_ends_and_kernel_width_follows_spacing():
    centers = bin_centers(40)
    assert centers[0].item() == -1.0 and centers[-1].item() == pytest.approx(1.0, abs=1e-7)
    step = 2 / 39
    assert default_alpha(40) == pytest.approx(1 / (2 * step**2))
    # sigma = step: a pair's total mass barely depends on where it sits between centres.
    masses = [
        torch.exp(-default_alpha(40) * (s - centers) ** 2).sum().item()
        for s in (0.0, step / 2, step / 3)
    ]
    assert max(masses) / min(masses) - 1 < 1e-6
    plan = make_plan(40, None)
    assert (plan.window_low, plan.window_high) == (-5, 6)


def test_single_pair_lands_in_its_bins():
    angle = math.acos(0.5)
    codes = torch.tensor([[1.0, 0.0], [math.cos(angle), math.sin(angle)]])
    hist = glotok_bench.relation_histogram(codes, normalize="sum")
    # Two self-pairs at s = 1 and one pair at s = 0.5, between bins 29 (0.487) and 30.
    centers = bin_centers(40)
    at_one, at_half = (torch.exp(-default_alpha(40) * (s - centers) ** 2) for s in (1.0, 0.5))
    expected = (2 * at_one + at_half) / (2 * at_one + at_half).sum()
    torch.testing.assert_close(hist, expected, rtol=1e-5, atol=1e-7)
    assert torch.topk(hist[:35], 2).indices.tolist() == [29, 30]


def test_l2_normalisation_is_algorithm_1_literal():
    codes = torch.randn(50, 8)
    raw = direct_relation_histogram(F.normalize(codes, dim=1), make_plan(40, None))
    l2 = glotok_bench.relation_histogram(codes, normalize="l2")
    torch.testing.assert_close(l2, raw / raw.norm(), rtol=1e-5, atol=1e-7)
    assert glotok_bench.relation_histogram(codes).sum().item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("normalize", ["sum", "l2"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_and_its_gradient_match_the_direct_method(normalize, reduction):
    generator = torch.Generator().manual_seed(3)
    teacher = glotok_bench.relation_histogram(
        torch.randn(120, 16, generator=generator), normalize=normalize
    )
    student = torch.randn(90, 8, generator=generator)
    losses, grads = [], []
    for method in ("direct", "streaming"):
        leaf = student.clone().requires_grad_(True)
        loss = glotok_bench.histogram_relation_loss(
            leaf, teacher, normalize=normalize, reduction=reduction, method=method, tile=32
        )
        loss.backward()
        losses.append(loss.detach())
        grads.append(leaf.grad)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-5 * grads[0].abs().max().item())


def test_loss_is_a_kl_divergence_that_training_reduces():
    generator = torch.Generator().manual_seed(4)
    teacher_codes = torch.randn(64, 8, generator=generator)
    teacher = glotok_bench.relation_histogram(teacher_codes)
    same = glotok_bench.histogram_relation_loss(teacher_codes, teacher)
    assert abs(same.item()) < 1e-6
    torch.testing.assert_close(
        glotok_bench.histogram_relation_loss(teacher_codes * 3.0, teacher), same, atol=1e-6, rtol=0
    )

    teacher_param = teacher.clone().requires_grad_(True)
    student = (torch.randn(64, 8, generator=generator) + 2.0).requires_grad_(True)  # one tight cone
    optimizer = torch.optim.Adam([student], lr=0.05)
    first = None
    for _ in range(30):
        optimizer.zero_grad()
        loss = glotok_bench.histogram_relation_loss(student, teacher_param)
        loss.backward()
        optimizer.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.5 * first
    assert teacher_param.grad is None  # sg[P_t]


def test_empty_student_bins_give_a_finite_loss():
    codes = torch.tensor([[1.0, 0.0], [1.0, 0.01]])  # every similarity near 1
    teacher = torch.full((40,), 1 / 40)
    leaf = codes.clone().requires_grad_(True)
    loss = glotok_bench.histogram_relation_loss(leaf, teacher)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(leaf.grad).all()


def test_bf16_autocast_and_half_inputs_compute_in_float32():
    codes = torch.randn(200, 8)
    expected = glotok_bench.relation_histogram(codes)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = glotok_bench.relation_histogram(codes)
        loss = glotok_bench.histogram_relation_loss(codes.requires_grad_(True), expected)
    assert under_autocast.dtype == torch.float32 and loss.dtype == torch.float32
    torch.testing.assert_close(under_autocast, expected, rtol=1e-6, atol=1e-8)
    loss.backward()
    assert codes.grad.dtype == torch.float32 and torch.isfinite(codes.grad).all()


def test_sampled_estimator_is_close_and_reproducible():
    generator = torch.Generator().manual_seed(5)
    codes = torch.randn(400, 8, generator=generator)
    exact = glotok_bench.relation_histogram(codes)
    draws = [
        glotok_bench.relation_histogram(
            codes, method="sampled", num_pairs=40_000, generator=torch.Generator().manual_seed(9)
        )
        for _ in range(2)
    ]
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)
    assert (draws[0] - exact).abs().sum().item() < 0.03


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bins": 1}, "bins"),
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": 1e6}, "too large"),
        ({"normalize": "max"}, "normalize"),
        ({"method": "fast"}, "method"),
    ],
)
def test_bad_options_raise_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        glotok_bench.relation_histogram(torch.randn(5, 3), **kwargs)


def test_teacher_histogram_must_be_a_distribution_over_bins():
    with pytest.raises(ConfigError, match="1-D"):
        glotok_bench.histogram_relation_loss(torch.randn(5, 3), torch.ones(2, 40))
    with pytest.raises(ConfigError, match="non-negative"):
        glotok_bench.histogram_relation_loss(torch.randn(5, 3), -torch.ones(40))


def _peak_rss_growth(run) -> int:
    status = Path("/proc/self/status")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS

    def high_water() -> int:
        return int(re.search(r"VmHWM:\s+(\d+) kB", status.read_text()).group(1)) * 1024

    before = high_water()
    run()
    return high_water() - before


def _forward_backward(n: int) -> None:
    codes = torch.randn(n, 8, requires_grad=True)
    glotok_bench.histogram_relation_loss(codes, torch.full((40,), 1 / 40)).backward()
    assert torch.isfinite(codes.grad).all()


needs_proc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not Path("/proc/self/clear_refs").exists(),
    reason="peak-RSS reset needs Linux /proc",
)


@needs_proc
def test_memory_does_not_grow_with_pairs():
    # Direct: 8.4M pairs x 40 bins x 4 B = 1.3 GB for the kernel values alone.
    growth = _peak_rss_growth(lambda: _forward_backward(4096))
    assert growth < 64 * 2**20, f"peak RSS grew by {growth / 2**20:.0f} MiB"


@needs_proc
@pytest.mark.slow
def test_paper_scale_codebook_fits_in_bounded_memory():
    # Direct: 134M pairs x 40 bins, about 21 GB in float32 before any gradient.
    growth = _peak_rss_growth(lambda: _forward_backward(16384))
    assert growth < 128 * 2**20, f"peak RSS grew by {growth / 2**20:.0f} MiB"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    codes = torch.randn(3000, 8)
    teacher = glotok_bench.relation_histogram(torch.randn(500, 8))
    losses, grads = [], []
    for device in ("cpu", "cuda"):
        leaf = codes.to(device).requires_grad_(True)
        loss = glotok_bench.histogram_relation_loss(leaf, teacher.to(device))
        loss.backward()
        losses.append(loss.item())
        grads.append(leaf.grad.cpu())
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    torch.testing.assert_close(
        grads[1], grads[0], rtol=1e-3, atol=1e-3 * grads[0].abs().max().item()
    )


# -- host syncs (issue 14.6): none per training step ----------------------------------------

# Every way this code could read a device value back to the host, or copy host data to
# the device, from Python.
_HOST_READS = ("__bool__", "item", "tolist", "cpu", "numpy", "__float__", "__int__")


@pytest.fixture()
def host_transfers(monkeypatch):
    """Counts Tensor->host reads and torch.tensor() host->device copies by name."""
    counts: dict[str, int] = {}

    def counting(name, original):
        def wrapper(*args, **kwargs):
            counts[name] = counts.get(name, 0) + 1
            return original(*args, **kwargs)

        return wrapper

    for name in _HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch, "tensor", counting("torch.tensor", torch.tensor))
    return counts


@pytest.mark.parametrize("method", ["streaming", "direct", "sampled"])
def test_loss_step_with_a_checked_teacher_reads_nothing_back(host_transfers, method):
    teacher = glotok_bench.relation_histogram(torch.randn(200, 8))
    codes = torch.randn(300, 8, requires_grad=True)
    host_transfers.clear()
    loss = glotok_bench.histogram_relation_loss(
        codes, teacher, method=method, tile=64, check_teacher=False
    )
    loss.backward()
    assert host_transfers == {}


def test_the_default_check_is_what_reads_back(host_transfers):
    """The counter sees the per-call teacher check, so the test above can fail."""
    teacher = glotok_bench.relation_histogram(torch.randn(200, 8))
    host_transfers.clear()
    glotok_bench.histogram_relation_loss(torch.randn(50, 8), teacher)
    assert host_transfers.get("__bool__", 0) >= 1


def test_supervision_checks_its_teacher_once(tmp_path, host_transfers):
    from glotok_bench.supervision.histogram import HistogramSupervision

    torch.save({"codebook": torch.randn(100, 16)}, tmp_path / "teacher.pt")
    supervision = HistogramSupervision(
        HistogramSupervision.Config(teacher_file=str(tmp_path / "teacher.pt"), tile=64),
        semantic_dim=8,
    )
    codebook = torch.randn(300, 8, requires_grad=True)
    host_transfers.clear()
    for _ in range(2):
        supervision.loss(codebook).backward()
    assert host_transfers == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: sync debug mode needs one")
def test_cuda_loss_step_does_not_synchronize():
    teacher = glotok_bench.relation_histogram(torch.randn(500, 8, device="cuda"))
    codes = torch.randn(3000, 8, device="cuda", requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = glotok_bench.histogram_relation_loss(codes, teacher, tile=512, check_teacher=False)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
