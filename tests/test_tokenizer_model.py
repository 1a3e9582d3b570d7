"""Tokenizer components: shapes, quantizer maths, residual heads, branch order, presets."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import torch
import torch.nn.functional as F

from glotok_bench.config import ComponentChoice
from glotok_bench.errors import ConfigError
from glotok_bench.tokenizer import standalone_registry
from glotok_bench.tokenizer.config import TokenizerConfig
from glotok_bench.tokenizer.conv import ConvAutoencoder
from glotok_bench.tokenizer.model import (
    build_tokenizer,
    load_tokenizer_config,
    tokenizer_config_from_dict,
)
from glotok_bench.tokenizer.quantizers import Codebook, DualQuantizer, VectorQuantizer
from glotok_bench.tokenizer.residual import NoResidualHead, TransformerResidualHead

REGISTRY = standalone_registry()
ROOT = Path(__file__).resolve().parents[1]
TINY_TOML = ROOT / "tests" / "configs" / "tiny-16.toml"


# Tiny models run faster on one thread, and far faster when the 2 cores are shared.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(
    quantizer="dual", head="transformer", distance="cosine", resolution=16
) -> TokenizerConfig:
    """tests/configs/tiny-16.toml, or a variant: a single 32-code codebook (``"vq"``), no
    residual head (``"none"``), another distance or resolution."""
    config = load_tokenizer_config(TINY_TOML)
    q = config.quantizer.config
    if quantizer == "vq":
        q = VectorQuantizer.Config(codebook_size=32, code_dim=q.code_dim)
    h = config.residual_head if head == "transformer" else ComponentChoice(head, NoResidualHead.Config())
    return attrs.evolve(
        config,
        resolution=resolution,
        quantizer=ComponentChoice(quantizer, attrs.evolve(q, distance=distance)),
        residual_head=h,
    )


def images(n=2, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_llamagen_layout_downsamples_256_by_16():
    conv = ConvAutoencoder(ConvAutoencoder.Config(base_channels=8, z_channels=8), resolution=256)
    assert conv.downsample_factor == 16 and conv.grid_size == 16
    with torch.no_grad():
        z = conv.encode(torch.zeros(1, 3, 64, 64))
        assert z.shape == (1, 8, 4, 4)
        assert conv.decode(z).shape == (1, 3, 64, 64)


def test_resolution_must_fit_the_downsampling():
    with pytest.raises(ConfigError, match="not divisible"):
        ConvAutoencoder(ConvAutoencoder.Config(), resolution=200)


@pytest.mark.parametrize("quantizer", ["dual", "vq"])
def test_a_transformer_adapter_for_another_token_grid_is_refused_when_the_model_is_built(quantizer):
    from glotok_bench.tokenizer.adapters import AdapterConfig

    config = tiny_config(quantizer, head="none")  # 16 px at 2x down: an 8x8 token grid

    def with_adapter(grid_size):
        adapter = AdapterConfig(kind="transformer", depth=1, heads=2, grid_size=grid_size, head_channels=8)
        return attrs.evolve(
            config,
            autoencoder=ComponentChoice("vqgan-conv", attrs.evolve(config.autoencoder.config, encoder_output="trunk")),
            quantizer=ComponentChoice(quantizer, attrs.evolve(config.quantizer.config, adapter=adapter)),
        )

    with pytest.raises(ConfigError) as refused:
        build_tokenizer(with_adapter(16), registry=REGISTRY)
    assert str(refused.value) == (
        "tokenizer.quantizer.adapter.grid_size = 16, but tokenizer.resolution = 16 at the autoencoder's "
        "2x downsampling gives a token grid of 8x8; set adapter.grid_size = 8 or resolution = 32"
    )
    with torch.no_grad():
        assert build_tokenizer(with_adapter(8), registry=REGISTRY)(images()).reconstruction.shape == (2, 3, 16, 16)


def test_dual_tokenizer_shapes_and_branch_order():
    torch.manual_seed(0)
    model = build_tokenizer(tiny_config(), registry=REGISTRY)
    out = model(images())
    enc = out.encoding
    assert out.reconstruction.shape == (2, 3, 16, 16)
    assert set(enc.indices) == {"semantic", "visual"}
    assert (
        enc.indices["semantic"].shape == (2, 8, 8) and enc.indices["semantic"].dtype == torch.long
    )
    assert enc.quantized.shape == enc.with_residual.shape == enc.continuous.shape == (2, 8, 8, 8)
    # Decoder input is cat([semantic, visual]) (GloTok's order, not FQGAN's).
    assert torch.equal(enc.quantized[:, :4], enc.branches["semantic"].quantized)
    assert torch.equal(enc.quantized[:, 4:], enc.branches["visual"].quantized)
    assert model.codebook_sizes == {"semantic": 16, "visual": 48}
    assert model.semantic_codebook().shape == (16, 4)
    assert model.semantic_codebook() is model.quantizer.codebooks["semantic"].embedding.weight
    for key in ("semantic/usage", "semantic/perplexity", "visual/usage", "visual/perplexity"):
        assert key in out.stats


def test_vq_tokenizer_has_single_branch_and_no_semantic_codebook():
    model = build_tokenizer(tiny_config("vq", "none"), registry=REGISTRY)
    enc = model.encode(images())
    assert list(enc.indices) == ["codes"]
    assert model.semantic_codebook() is None
    assert torch.equal(enc.with_residual, enc.quantized)


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_codebook_picks_the_nearest_code_and_computes_eq1(distance):
    torch.manual_seed(1)
    book = Codebook(32, 4, distance, beta=0.25)
    torch.nn.init.normal_(book.embedding.weight)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    branch, loss, stats = book(z)
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    codes = book.embedding.weight.detach()
    if distance == "cosine":
        flat, codes = F.normalize(flat, dim=1), F.normalize(codes, dim=1)
    brute = ((flat[:, None] - codes[None]) ** 2).sum(-1).argmin(1)
    assert torch.equal(branch.indices.flatten(), brute)
    zq = codes[brute]
    assert torch.allclose(loss, 1.25 * F.mse_loss(zq, flat), atol=1e-6)
    # Straight-through: forward value is the code, gradient reaches z as identity.
    assert torch.allclose(branch.quantized.permute(0, 2, 3, 1).reshape(-1, 4), zq, atol=1e-6)
    branch.quantized.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    used = brute.unique().numel()
    assert stats["usage"].item() == pytest.approx(used / 32)
    assert 1.0 <= stats["perplexity"].item() <= used + 1e-4


def test_codebook_loss_trains_codes_and_commitment_trains_encoder():
    torch.manual_seed(2)
    book = Codebook(8, 4, "euclidean", beta=0.25)
    z = torch.randn(1, 4, 2, 2, requires_grad=True)
    _, loss, _ = book(z)
    loss.backward()
    assert book.embedding.weight.grad.abs().sum() > 0
    assert z.grad.abs().sum() > 0


def test_usage_window_counts_codes_across_training_batches():
    book = Codebook(8, 2, "euclidean", beta=0.25)
    with torch.no_grad():
        book.embedding.weight.copy_(torch.arange(16, dtype=torch.float32).reshape(8, 2))
    book.train()
    book(torch.tensor([[[[0.0]], [[1.0]]]]))  # nearest: code 0
    book(torch.tensor([[[[14.0]], [[15.0]]]]))  # nearest: code 7
    assert book.window_usage().item() == pytest.approx(2 / 8)
    assert book.window_usage().item() == 0.0  # reset


def test_transformer_residual_head_starts_at_zero_and_learns():
    torch.manual_seed(3)
    head = TransformerResidualHead(
        TransformerResidualHead.Config(width=16, heads=2, gradient="straight-through"), channels=4
    )
    zq = torch.randn(2, 4, 3, 3)
    assert torch.equal(head(zq), torch.zeros_like(zq))  # zero-initialised output projection
    target = torch.randn(2, 4, 3, 3)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = head.loss(target, zq, head(zq)).item()
    for _ in range(30):
        loss = head.loss(target, zq, head(zq))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_residual_loss_is_eq10_and_stops_gradient_at_z():
    head = TransformerResidualHead(
        TransformerResidualHead.Config(width=8, heads=2, loss="l1", gradient="straight-through"),
        channels=2,
    )
    z = torch.randn(1, 2, 2, 2, requires_grad=True)
    zq = torch.randn(1, 2, 2, 2, requires_grad=True)
    res = torch.randn(1, 2, 2, 2)
    loss = head.loss(z, zq, res)
    assert torch.allclose(loss, (z - zq - res).abs().mean())
    loss.backward()
    assert z.grad is None and zq.grad is not None


def test_with_residual_adds_the_head_output_and_decode_indices_matches():
    torch.manual_seed(4)
    model = build_tokenizer(tiny_config(), registry=REGISTRY).eval()
    for head in model.residual_heads.values():
        torch.nn.init.normal_(head.proj_out.weight, std=0.1)
    with torch.no_grad():
        enc = model.encode(images())
        sem = enc.branches["semantic"]
        assert torch.allclose(sem.with_residual, sem.quantized + sem.residual)
        assert not torch.allclose(enc.with_residual, enc.quantized)
        assert torch.allclose(model.latents_from_indices(enc.indices), enc.with_residual, atol=1e-5)
        assert torch.allclose(
            model.latents_from_indices(enc.indices, residual=False), enc.quantized, atol=1e-6
        )
        assert torch.allclose(
            model.decode_indices(enc.indices), model.decode(enc.with_residual), atol=1e-5
        )
        # A caller can zero the visual half and decode (paper Fig. 4).
        parts = {n: b.with_residual for n, b in enc.branches.items()}
        parts["visual"] = torch.zeros_like(parts["visual"])
        assert model.decode(model.concat(parts)).shape == (2, 3, 16, 16)


def test_decode_rejects_wrong_channel_count():
    model = build_tokenizer(tiny_config(), registry=REGISTRY)
    with pytest.raises(ValueError, match="expects latents"):
        model.decode(torch.zeros(1, 5, 8, 8))
    with pytest.raises(ValueError, match="out of range"):
        model.decode_indices(
            {
                "semantic": torch.full((1, 8, 8), 16),
                "visual": torch.zeros(1, 8, 8, dtype=torch.long),
            }
        )


def test_bad_quantizer_configs_fail_clearly():
    with pytest.raises(ConfigError, match="at least 2 codes"):
        DualQuantizer(DualQuantizer.Config(semantic_size=1), in_channels=8)
    with pytest.raises(ValueError, match="code_dim"):  # refused when the config is made
        DualQuantizer.Config(code_dim=0)


def test_bad_residual_width_fails_clearly():
    with pytest.raises(ConfigError, match="multiple of heads"):
        TransformerResidualHead(TransformerResidualHead.Config(width=10, heads=3), channels=8)


def test_config_round_trips_through_plain_dict():
    from glotok_bench.config import to_dict

    config = tiny_config()
    assert tokenizer_config_from_dict(to_dict(config), registry=REGISTRY) == config


def test_cpu_presets_tokenize_to_an_8x8_grid():
    for preset in ("glotok.toml", "glotok-64.toml"):
        model = build_tokenizer(load_tokenizer_config(ROOT / "configs" / "cpu" / preset), registry=REGISTRY)
        assert model.grid_size == 8 and model.latent_channels == 16, preset
    with pytest.raises(ConfigError, match="not found"):
        load_tokenizer_config(ROOT / "configs" / "nope.toml")


def test_toml_tables_structure_into_tokenizer_config():
    from glotok_bench.config import structure
    from glotok_bench.registry import get_registry

    if "vqgan-conv" not in get_registry().names("autoencoder"):
        pytest.skip("built-in plugins are not installed (pip install -e .)")
    config = structure(
        TokenizerConfig,
        {
            "resolution": 32,
            "quantizer": {"name": "vq", "codebook_size": 1024},
            "residual_head": "none",
        },
    )
    assert config.quantizer == ComponentChoice("vq", VectorQuantizer.Config(codebook_size=1024))
    with pytest.raises(ConfigError, match="semantic_size"):
        structure(TokenizerConfig, {"quantizer": {"name": "dual", "semantic_sizes": 3}})
