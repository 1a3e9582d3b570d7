"""Behaviour of the generator models: masks, KV cache, guidance, sampling and flow helpers."""

from __future__ import annotations

import pytest
import torch
from test_generators_tokens import DUAL

from glotok_bench.errors import ConfigError

# Tiny models run faster on one thread, and far faster when the 2 cores are shared.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONTEXT = dict(codebook_sizes=DUAL, grid_size=8, channels=8, num_classes=4)


def randomized(model: torch.nn.Module, std: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Every parameter random, so zero-initialised heads and adaLN gates carry signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def far(**overrides):
    from glotok_bench.generators.presets import FAR_TINY

    return randomized(FAR_TINY(FAR_TINY.Config(**overrides), **CONTEXT))


def xar(**overrides):
    from glotok_bench.generators.presets import XAR_TINY

    return randomized(XAR_TINY(XAR_TINY.Config(**overrides), **CONTEXT), std=0.1)


def ar():
    from glotok_bench.generators.presets import AR_TINY

    return randomized(AR_TINY(AR_TINY.Config(branch="visual"), **CONTEXT))


# -- layers ------------------------------------------------------------------------------------


def test_rope_scores_depend_only_on_the_2d_offset():
    from glotok_bench.generators.layers import apply_rope, rope_table

    q, k = torch.randn(2, 1, 1, 1, 16).unbind(0)

    def score(p, r):
        angles = rope_table(torch.tensor([p[0], r[0]]), torch.tensor([p[1], r[1]]), 16)
        return (apply_rope(q, angles[:1]) * apply_rope(k, angles[1:])).sum()

    base = score((1, 2), (4, 7))
    assert torch.allclose(base, score((3, 5), (6, 10)), atol=1e-5)  # same offset (3, 5)
    assert not torch.allclose(base, score((1, 2), (7, 4)), atol=1e-3)  # rows and columns differ
    x = torch.randn(1, 2, 5, 16)
    rotated = apply_rope(x, rope_table(torch.arange(5), torch.arange(5), 16))
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-5)


def test_class_dropout_replaces_labels_only_in_training():
    from glotok_bench.generators.layers import ClassEmbedding

    emb = ClassEmbedding(4, 8, dropout=1.0)
    labels = torch.tensor([0, 1, 2, 3])
    assert torch.equal(emb.train()(labels), emb.table(emb.null(labels)))
    assert torch.equal(emb.eval()(labels), emb.table(labels))


# -- masks -------------------------------------------------------------------------------------


def test_far_is_causal_over_positions_and_inside_each_position():
    model = far()
    labels = torch.tensor([1, 2])
    tokens = torch.stack([torch.randint(0, 48, (2, 64)), torch.randint(0, 16, (2, 64))], dim=-1)
    first, second = model.logits(labels, tokens)
    changed = tokens.clone()
    changed[:, 20] = torch.tensor([3, 5])
    first2, second2 = model.logits(labels, changed)
    # Position 20's first index is predicted before either index of position 20 is known,
    # its second index only after its first one.
    assert torch.equal(first[:, :21], first2[:, :21])
    assert torch.equal(second[:, :20], second2[:, :20])
    assert not torch.allclose(second[:, 20], second2[:, 20])
    assert not torch.allclose(first[:, 21:], first2[:, 21:])


def test_ar_is_causal():
    model = ar()
    labels = torch.tensor([0, 3])
    tokens = torch.randint(0, 48, (2, 64))
    changed = tokens.clone()
    changed[:, 30] = (tokens[:, 30] + 1) % 48
    before, after = model.logits(labels, tokens), model.logits(labels, changed)
    assert torch.equal(before[:, :31], after[:, :31])
    assert not torch.allclose(before[:, 31:], after[:, 31:])


def test_xar_attention_is_block_causal_over_cells():
    model = xar()  # 8x8 grid, 4x4 cells: 4 cells of 16 tokens
    x = torch.randn(1, 64, 8)
    times = torch.rand(1, 4)
    labels = torch.tensor([2])
    out = model.velocity(x, labels, times)
    changed = x.clone()
    changed[:, 32:48] += 1.0  # cell 2
    out2 = model.velocity(changed, labels, times)
    assert torch.allclose(out[:, :32], out2[:, :32], atol=1e-6)  # cells 0 and 1 cannot see cell 2
    assert not torch.allclose(out[:, 48:], out2[:, 48:], atol=1e-4)  # cell 3 sees it
    # Inside a cell attention goes both ways: the last token of cell 0 reaches its first.
    changed = x.clone()
    changed[:, 15] += 1.0
    assert not torch.allclose(model.velocity(changed, labels, times)[:, 0], out[:, 0], atol=1e-4)
    # Each cell's own time conditions it and only it.
    later = times.clone()
    later[:, 3] = 0.9 if times[0, 3] < 0.5 else 0.1
    out3 = model.velocity(x, labels, later)
    assert torch.allclose(out[:, :48], out3[:, :48], atol=1e-6)
    assert not torch.allclose(out[:, 48:], out3[:, 48:], atol=1e-4)


def test_xar_cell_order_round_trips_features():
    model = xar()
    features = torch.randn(2, 8, 8, 8)
    sequence = model.to_sequence(features)
    # The first cell is the top-left 4x4 block, read row by row.
    assert torch.equal(sequence[0, :4], features[0, :, 0, :4].T)
    assert torch.equal(sequence[0, 4:8], features[0, :, 1, :4].T)
    assert torch.allclose(model.to_features(sequence), features, atol=1e-6)
    # Normalisation statistics fitted on data standardise it and are undone on the way out.
    data = torch.randn(20, 8, 8, 8) * torch.linspace(0.1, 2.0, 8).view(1, 8, 1, 1) + 3.0
    model.fit_statistics({"with_residual": data.half()}, chunk=7)
    standard = model.to_sequence(data)
    assert (
        standard.mean((0, 1)).abs().max() < 1e-2 and (standard.std((0, 1)) - 1).abs().max() < 1e-2
    )
    assert torch.allclose(model.to_features(standard), data, atol=1e-4)


# -- sampling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [far, ar], ids=["far", "ar"])
def test_kv_cache_sampling_equals_full_recompute(make):
    model = make()
    labels = torch.tensor([0, 1, 3])
    options = dict(cfg_scale=2.5, temperature=1.0, top_k=20, top_p=0.95, seed=7)
    cached = model.sample(labels, kv_cache=True, **options)
    full = model.sample(labels, kv_cache=False, **options)
    assert cached.keys() == full.keys()
    for branch in cached:
        assert cached[branch].shape == (3, 8, 8)
        assert torch.equal(cached[branch], full[branch])


def test_xar_kv_cache_sampling_equals_full_recompute():
    model = xar()
    labels = torch.tensor([1, 2])
    options = dict(cfg_scale=2.0, seed=3, steps_first=4, steps_last=2)
    cached = model.sample(labels, kv_cache=True, **options)
    full = model.sample(labels, kv_cache=False, **options)
    assert cached.shape == (2, 8, 8, 8)
    assert torch.allclose(cached, full, atol=1e-4)


def test_guidance_at_scale_one_is_the_conditional_model():
    # A linear schedule starts at scale 1: with the batch doubled for guidance, the first
    # position must come out exactly as without guidance, so the no-class half cannot leak.
    model = far()
    labels = torch.tensor([0, 2])
    plain = model.sample(labels, seed=5)
    ramped = model.sample(labels, seed=5, cfg_scale=4.0, cfg_schedule="linear")
    for branch in plain:
        assert torch.equal(plain[branch][:, 0, 0], ramped[branch][:, 0, 0])
    flow = xar()
    plain = flow.sample(labels, seed=5, steps_first=3, steps_last=3)
    ramped = flow.sample(
        labels, seed=5, steps_first=3, steps_last=3, cfg_scale=4.0
    )  # xAR ramps per cell
    assert torch.allclose(plain[..., :4, :4], ramped[..., :4, :4], atol=1e-5)  # first cell
    assert not torch.allclose(
        plain[..., 4:, 4:], ramped[..., 4:, 4:], atol=1e-3
    )  # last cell is guided


def test_guide_filter_and_draw():
    from glotok_bench.generators.sampling import cfg_scale_at, filter_logits, guide, sample_logits

    cond, uncond = torch.randn(2, 3, 10).unbind(0)
    assert torch.equal(guide(cond, uncond, 1.0), cond)
    assert torch.allclose(guide(cond, uncond, 3.0), uncond + 3.0 * (cond - uncond), atol=1e-5)
    assert [cfg_scale_at(i, 4, 4.0, "linear") for i in range(4)] == [1.0, 2.0, 3.0, 4.0]
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[False, True, False, True]]
    # probabilities ~ [.03, .64, .09, .24]: top_p 0.8 keeps the two best, 0.5 only the best
    assert torch.isfinite(filter_logits(logits, top_p=0.8)).tolist() == [[False, True, False, True]]
    assert torch.isfinite(filter_logits(logits, top_p=0.5)).tolist() == [
        [False, True, False, False]
    ]
    assert sample_logits(logits, temperature=0).tolist() == [1]
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_logits(logits, top_k=2, generator=g) for _ in range(200)])
    assert set(draws.flatten().tolist()) == {1, 3}
    with pytest.raises(ConfigError):
        sample_logits(logits, top_p=0.0)


def test_flow_samplers_reach_a_point_mass():
    from glotok_bench.generators.flow import integrate, interpolate

    target = torch.tensor([[1.5, -0.5, 0.25]])
    # For data concentrated at `target` the exact velocity is (x_t - target) / t.
    x_t, v = interpolate(target, torch.zeros_like(target) + 2.0, torch.tensor(0.5))
    assert torch.allclose(v, 2.0 - target) and torch.allclose(x_t, (target + 2.0) / 2)
    velocity = lambda x, t: (x - target) / t  # noqa: E731
    noise = torch.randn(512, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(
        integrate(velocity, noise, 5, method="euler"), target.expand(512, 3), atol=1e-5
    )
    # The SDE's last, noise-free step starts at t_end = 0.04, where x_t still holds noise of
    # std t_end; that step removes its mean but leaves a spread of about t_end.
    g = torch.Generator().manual_seed(0)
    error = integrate(velocity, noise, 40, method="euler_maruyama", generator=g) - target
    assert error.mean(0).abs().max() < 0.01
    assert 0.02 < error.std() < 0.07


def test_models_refuse_token_data_they_cannot_model():
    from glotok_bench.generators.presets import AR_TINY, FAR_TINY, XAR_TINY

    with pytest.raises(ConfigError, match="set `branch`"):
        AR_TINY(AR_TINY.Config(), **CONTEXT)
    with pytest.raises(ConfigError, match="two-codebook"):
        FAR_TINY(FAR_TINY.Config(), **{**CONTEXT, "codebook_sizes": {"codes": 64}})
    with pytest.raises(ConfigError, match="does not tile"):
        XAR_TINY(XAR_TINY.Config(cell_size=3), **CONTEXT)
    with pytest.raises(ConfigError, match="top_k"):
        XAR_TINY(XAR_TINY.Config(), **CONTEXT).sample(torch.tensor([0]), top_k=5)


# -- sampling options ---------------------------------------------------------------------------


def test_unset_sampling_options_take_the_generators_own_defaults():
    from glotok_bench.generators.options import SamplingOptions

    guided = far(cfg_scale=3.0)  # a preset whose default guidance is 3
    labels = torch.tensor([0, 2])
    by_default = guided.sample(labels, SamplingOptions(seed=5))
    assert all(
        torch.equal(by_default[b], t) for b, t in guided.sample(labels, seed=5, cfg_scale=3.0).items()
    )
    unguided = guided.sample(labels, SamplingOptions(seed=5, cfg_scale=1.0))
    assert any(not torch.equal(by_default[b], unguided[b]) for b in by_default)
    # What a record stores is resolved: no field is left to "whatever the preset says".
    resolved = SamplingOptions().resolve(guided.config)
    assert resolved.cfg_scale == 3.0 and resolved.cfg_schedule == "constant"
    assert SamplingOptions(cfg_scale=1.5).resolve(guided.config).cfg_scale == 1.5


def test_sampling_options_refuse_unknown_and_out_of_range_values():
    from glotok_bench.config import structure
    from glotok_bench.generators.options import SamplingOptions, sampling_options
    from glotok_bench.runconfig import GenerationConfig

    with pytest.raises(ConfigError, match="cfg_sacle"):
        sampling_options(cfg_sacle=2.0)
    with pytest.raises(ConfigError, match="top_p"):
        sampling_options(top_p=0.0)
    with pytest.raises(ConfigError, match="steps_first"):
        structure(GenerationConfig, {"steps_first": 0})
    with pytest.raises(ConfigError, match="cfg_scale"):
        structure(GenerationConfig, {"cfg_scale": float("nan")})
    # The [generation] section keeps its flat keys and hands over exactly the sampling part.
    generation = structure(GenerationConfig, {"cfg_scale": 2.0, "steps_first": 8, "per_class": 3})
    assert SamplingOptions.of(generation) == SamplingOptions(cfg_scale=2.0, steps_first=8)


# -- xAR architecture options --------------------------------------------------------------------

SIMPLE_XAR = dict(
    mlp="swiglu", learned_positions=False, input_norm=False, encoder_decoder=False, adaln_zero=True
)


@pytest.mark.parametrize("form", [{}, SIMPLE_XAR], ids=["upstream", "simple"])
def test_xar_forms_keep_block_causality_and_cache_equality(form):
    model = xar(**form)
    x, times, labels = torch.randn(1, 64, 8), torch.rand(1, 4), torch.tensor([2])
    changed = x.clone()
    changed[:, 32:48] += 1.0  # cell 2
    out, out2 = model.velocity(x, labels, times), model.velocity(changed, labels, times)
    assert torch.allclose(out[:, :32], out2[:, :32], atol=1e-6)
    assert not torch.allclose(out[:, 48:], out2[:, 48:], atol=1e-4)
    options = dict(cfg_scale=2.0, seed=3, steps_first=2, steps_last=2)
    cached = model.sample(labels, kv_cache=True, **options)
    assert torch.allclose(cached, model.sample(labels, kv_cache=False, **options), atol=1e-4)


def test_xar_init_and_dropout_options():
    from glotok_bench.generators.presets import XAR_TINY

    x, times, labels = torch.randn(2, 64, 8), torch.rand(2, 4), torch.tensor([0, 1])
    # adaLN-zero starts at a zero prediction; xAR's own init (xavier everywhere) does not.
    zero = XAR_TINY(XAR_TINY.Config(adaln_zero=True), **CONTEXT).eval()
    assert torch.count_nonzero(zero.velocity(x, labels, times)) == 0
    upstream = XAR_TINY(XAR_TINY.Config(), **CONTEXT).eval()
    assert torch.count_nonzero(upstream.velocity(x, labels, times)) > 0
    # Attention-probability and projection dropout act in training only.
    dropped = XAR_TINY(XAR_TINY.Config(attn_dropout=0.5, class_dropout=0.0), **CONTEXT)
    dropped.eval()
    assert torch.equal(dropped.velocity(x, labels, times), dropped.velocity(x, labels, times))
    dropped.train()
    assert not torch.equal(dropped.velocity(x, labels, times), dropped.velocity(x, labels, times))
