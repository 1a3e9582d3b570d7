"""Samples -> images through a real (tiny) tokenizer: the residual heads on xAR's
``quantized`` latents, and an fp32 decode whatever precision sampling ran in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from glotok_bench.tokenizer import standalone_registry

# Tiny models run faster on one thread, and far faster when the 2 cores are shared.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

LABELS = torch.tensor([0, 3, 1])


def tokenizer():
    """The unit tests' tokenizer (8x8 grid, 4 + 4 channels) with every weight random, so
    the residual heads (zero-initialised output) add a non-zero Z_res."""
    from glotok_bench.tokenizer.model import build_tokenizer, load_tokenizer_config

    config = load_tokenizer_config(Path(__file__).parent / "configs" / "tiny-16.toml")
    model = build_tokenizer(config, registry=standalone_registry())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for head in model.residual_heads.values():
            for p in head.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def context(tok):
    return dict(
        codebook_sizes=tok.codebook_sizes,
        grid_size=tok.grid_size,
        channels=tok.latent_channels,
        num_classes=4,
    )


def test_add_residual_turns_bare_codes_into_the_decoders_input():
    tok = tokenizer()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        encoding = tok.encode(images)
        assert not torch.allclose(encoding.quantized, encoding.with_residual, atol=1e-3)
        assert torch.allclose(tok.add_residual(encoding.quantized), encoding.with_residual, atol=1e-6)


def test_xar_quantized_samples_are_decoded_with_the_residual_heads():
    from test_generators_models import randomized

    from glotok_bench.generators.generate import generate, to_uint8
    from glotok_bench.generators.options import SamplingOptions
    from glotok_bench.generators.presets import XAR_TINY
    from glotok_bench.generators.sampling import make_generator

    tok = tokenizer()
    model = randomized(XAR_TINY(XAR_TINY.Config(features="quantized"), **context(tok)), std=0.1)
    options = SamplingOptions(seed=3, steps_first=2, steps_last=2)
    images = generate(model, tok, LABELS, options, batch_size=8, device="cpu")
    # Batch 0 draws from seed * 1_000_003: the same latents, decoded both ways.
    latents = model.sample(LABELS, options, generator=make_generator(3 * 1_000_003, "cpu"))
    with torch.no_grad():
        with_heads = to_uint8(tok.decode(tok.add_residual(latents)).clamp(-1, 1))
        bare = to_uint8(tok.decode(latents).clamp(-1, 1))
    assert not np.array_equal(with_heads, bare)
    assert np.array_equal(images, with_heads)


def test_samples_are_decoded_in_fp32_when_sampling_runs_in_bf16():
    from test_generators_models import randomized

    from glotok_bench.generators.generate import generate, to_uint8
    from glotok_bench.generators.presets import FAR_TINY

    tok = tokenizer()
    seen = []

    class Recording:
        """The tokenizer, keeping the index grids it is asked to decode."""

        def __getattr__(self, name):
            return getattr(tok, name)

        def decode_indices(self, indices):
            seen.append({k: v.clone() for k, v in indices.items()})
            return tok.decode_indices(indices)

    model = randomized(FAR_TINY(FAR_TINY.Config(), **context(tok)))
    images = generate(
        model, Recording(), LABELS, seed=1, batch_size=8, device="cpu", precision="bf16"
    )
    assert len(seen) == 1
    with torch.no_grad():
        fp32 = to_uint8(tok.decode_indices(seen[0]).clamp(-1, 1))
    assert np.array_equal(images, fp32)
