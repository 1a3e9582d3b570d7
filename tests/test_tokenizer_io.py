"""Checkpoints (safe load, clear errors, files untouched), LPIPS files, tokenize, reconstruct."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glotok_bench.config import ComponentChoice
from glotok_bench.errors import CheckpointError, GlotokError, MissingWeightsError
from glotok_bench.tokenizer import standalone_registry
from glotok_bench.tokenizer.checkpoint import load_tokenizer, save_checkpoint
from glotok_bench.tokenizer.config import LossConfig
from glotok_bench.tokenizer.conv import ConvAutoencoder
from glotok_bench.tokenizer.losses import build_perceptual
from glotok_bench.tokenizer.model import build_tokenizer, load_tokenizer_config
from glotok_bench.tokenizer.perceptual import LPIPS
from glotok_bench.tokenizer.quantizers import DualQuantizer
from glotok_bench.tokenizer.reconstruct import reconstruct_images
from glotok_bench.tokenizer.tokenize import read_manifest, tokenize_dataset

REGISTRY = standalone_registry()


# Tiny models run faster on one thread, and far faster when the 2 cores are shared.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config():
    return load_tokenizer_config(Path(__file__).parent / "configs" / "tiny-16.toml")


def images(n=2, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture()
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    model = build_tokenizer(tiny_config(), registry=REGISTRY)
    ema = {k: v + 0.0 for k, v in model.state_dict().items()}
    return save_checkpoint(tmp_path / "tok.pt", model, ema=ema, step=7)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- checkpoints ---------------------------------------------------------------------------


def test_round_trip_restores_identical_outputs(checkpoint):
    torch.manual_seed(0)
    original = build_tokenizer(tiny_config(), registry=REGISTRY).eval()
    loaded, payload = load_tokenizer(checkpoint, registry=REGISTRY)
    assert payload["step"] == 7 and payload["codebook_sizes"] == {"semantic": 16, "visual": 48}
    with torch.no_grad():
        assert torch.equal(original(images()).reconstruction, loaded(images()).reconstruction)


def test_truncated_checkpoint_is_a_clear_error(checkpoint):
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_tokenizer(checkpoint, registry=REGISTRY)


class Payload:  # an arbitrary class: unpickling it means running import machinery
    def __reduce__(self):
        return (os.getcwd, ())


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "glotok-bench/tokenizer", "version": 1, "model": Payload()}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_tokenizer(path, registry=REGISTRY)


def test_foreign_checkpoint_is_refused(tmp_path):
    path = tmp_path / "llamagen.pt"
    torch.save({"model": {"quantize.embedding.weight": torch.zeros(16, 8)}}, path)
    with pytest.raises(CheckpointError, match="not a glotok-bench tokenizer checkpoint"):
        load_tokenizer(path, registry=REGISTRY)


def test_other_architecture_is_refused(checkpoint):
    wider = tiny_config()
    conv = ConvAutoencoder.Config(
        base_channels=32, channel_multipliers=(1, 2), num_res_blocks=1, z_channels=16
    )
    wider = type(wider)(
        resolution=16,
        autoencoder=ComponentChoice("vqgan-conv", conv),
        quantizer=wider.quantizer,
        residual_head=wider.residual_head,
    )
    with pytest.raises(CheckpointError, match="another architecture"):
        load_tokenizer(checkpoint, config=wider, registry=REGISTRY)


def test_codebook_sizes_that_do_not_fit_are_named(checkpoint):
    config = tiny_config()
    config = type(config)(
        resolution=16,
        autoencoder=config.autoencoder,
        residual_head=config.residual_head,
        quantizer=ComponentChoice(
            "dual", DualQuantizer.Config(semantic_size=32, visual_size=32, code_dim=4)
        ),
    )
    with pytest.raises(CheckpointError, match="do not fit"):
        load_tokenizer(checkpoint, config=config, registry=REGISTRY)


def test_bad_checkpoint_leaves_existing_outputs_untouched(tmp_path, checkpoint):
    tokens = tmp_path / "tokens"
    data = [(img, 0) for img in images(3)]
    tokenize_dataset(checkpoint, data, tokens, registry=REGISTRY)
    grid = tmp_path / "grid.png"
    grid.write_bytes(b"old grid")
    before = snapshot(tmp_path / "tokens")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(CheckpointError):
        tokenize_dataset(bad, data, tokens, overwrite=True, registry=REGISTRY)
    with pytest.raises(CheckpointError):
        reconstruct_images(bad, [tmp_path / "missing.png"], grid, registry=REGISTRY)
    assert snapshot(tokens) == before and grid.read_bytes() == b"old grid"


# -- perceptual loss -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    from glotok_bench.tokenizer.perceptual import write_random_lpips_weights

    return write_random_lpips_weights(tmp_path_factory.mktemp("lpips"))


def test_lpips_is_zero_for_identical_images_and_differentiable(lpips_files):
    lpips = LPIPS(*lpips_files)
    x = images(2, 32)
    y = images(2, 32, seed=1).requires_grad_(True)
    assert torch.allclose(lpips(x, x), torch.zeros(2), atol=1e-6)
    d = lpips(x, y)
    assert d.shape == (2,) and (d > 0).all()
    d.sum().backward()
    assert y.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in lpips.parameters())


def test_lpips_training_dropout_is_unbiased_noise_only_in_train_mode(lpips_files):
    plain = LPIPS(*lpips_files)
    dropped = LPIPS(*lpips_files, training_dropout=0.5)
    x, y = images(2, 32), images(2, 32, seed=1)
    reference = plain(x, y)
    assert torch.equal(dropped(x, y), reference)  # built in eval mode: no dropout
    dropped.train()
    assert dropped.training and not any(block.training for block in dropped.slices)
    torch.manual_seed(0)
    draws = torch.stack([dropped(x, y) for _ in range(200)])
    assert not torch.equal(draws[0], draws[1])
    # Inverted dropout keeps the expectation: the mean of the draws is the eval distance.
    assert torch.allclose(draws.mean(0), reference, rtol=0.05)
    dropped.eval()
    assert torch.equal(dropped(x, y), reference)


def test_lpips_rejects_files_in_the_wrong_layout(tmp_path, lpips_files):
    bad = tmp_path / "lin.pth"
    torch.save({"lin0.weight": torch.zeros(1, 64, 1, 1)}, bad)
    with pytest.raises(CheckpointError, match="lin0.model.1.weight"):
        LPIPS(lpips_files[0], bad)


def test_missing_perceptual_weights_stop_unless_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("GLOTOK_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(MissingWeightsError):
        build_perceptual(LossConfig(vgg_weights=str(tmp_path / "none.pth")))
    assert build_perceptual(LossConfig(perceptual=False)) is None


# -- tokenize and reconstruct --------------------------------------------------------------


def test_tokenize_writes_manifest_and_shards(tmp_path, checkpoint):
    from safetensors.torch import load_file

    data = [(img, i) for i, img in enumerate(images(5))]
    manifest_path = tokenize_dataset(
        checkpoint, data, tmp_path / "tok", batch_size=2, shard_size=2, registry=REGISTRY
    )
    manifest = json.loads(manifest_path.read_text())
    assert manifest == read_manifest(tmp_path / "tok")
    assert manifest["count"] == 5 and [s["count"] for s in manifest["shards"]] == [2, 2, 1]
    assert manifest["codebook_sizes"] == {"semantic": 16, "visual": 48}
    assert manifest["branches"] == ["semantic", "visual"] and manifest["grid"] == [8, 8]
    assert len(manifest["tokenizer_sha256"]) == 64
    shard = load_file(tmp_path / "tok" / "shard-00002.safetensors")
    assert shard["indices.semantic"].dtype == torch.int32 and shard["indices.visual"].shape == (
        1,
        8,
        8,
    )
    assert shard["quantized"].dtype == torch.float16 and shard["with_residual"].shape == (
        1,
        8,
        8,
        8,
    )
    assert shard["labels"].tolist() == [4]
    # The stored indices decode to the stored features.
    tokenizer, _ = load_tokenizer(checkpoint, registry=REGISTRY)
    first = load_file(tmp_path / "tok" / "shard-00000.safetensors")
    with torch.no_grad():
        latents = tokenizer.latents_from_indices(
            {b: first[f"indices.{b}"].long() for b in ("semantic", "visual")}
        )
    assert torch.allclose(latents, first["with_residual"].float(), atol=2e-3)
    with pytest.raises(GlotokError, match="already holds tokens"):
        tokenize_dataset(checkpoint, data, tmp_path / "tok", registry=REGISTRY)


def test_reconstruct_writes_side_by_side_grid(tmp_path, checkpoint):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    result = reconstruct_images(checkpoint, folder, tmp_path / "grid.png", registry=REGISTRY)
    grid = Image.open(tmp_path / "grid.png")
    # 3 pairs of 16 px images in one row with 2 px padding.
    assert grid.size == (6 * 18 + 2, 18 + 2)
    assert len(result["psnr"]) == 3 and all(np.isfinite(result["psnr"]))
