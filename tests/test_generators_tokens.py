"""Token-directory reader and batch stream; also the fakes the other generator tests import
(a small learnable token set and a tokenizer stand-in)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glotok_bench.errors import ConfigError, DataError

DUAL = {"semantic": 16, "visual": 48}


# Tiny models run faster on one thread, and far faster when the 2 cores are shared.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_fake_tokens(
    root: Path,
    *,
    count: int = 64,
    grid: int = 8,
    classes: int = 4,
    sizes: dict[str, int] | None = None,
    code_dim: int = 4,
    shards: int = 2,
    seed: int = 0,
    manifest_extra: dict | None = None,
) -> Path:
    """A token directory in the ``tokenize`` layout whose content is learnable: every image
    of class c has the same index grids (a fixed random pattern per class), so a generator
    can drive its loss far down in a few dozen steps."""
    from safetensors.torch import save_file

    sizes = dict(DUAL if sizes is None else sizes)
    root.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % classes
    indices = {
        b: torch.randint(0, s, (classes, grid, grid), generator=g)[labels] for b, s in sizes.items()
    }
    codebooks = {
        b: torch.nn.functional.normalize(torch.randn(s, code_dim, generator=g), dim=1)
        for b, s in sizes.items()
    }
    quantized = torch.cat([codebooks[b][indices[b]].permute(0, 3, 1, 2) for b in sizes], dim=1)
    with_residual = quantized + 0.05 * torch.randn(quantized.shape, generator=g)
    per, files = -(-count // shards), []
    for i in range(shards):
        part = slice(i * per, min(count, (i + 1) * per))
        tensors = {f"indices.{b}": indices[b][part].to(torch.int32).contiguous() for b in sizes}
        tensors["quantized"] = quantized[part].half().contiguous()
        tensors["with_residual"] = with_residual[part].half().contiguous()
        tensors["labels"] = labels[part].long().contiguous()
        name = f"shard-{i:05d}.safetensors"
        save_file(tensors, str(root / name))
        files.append({"file": name, "count": int(tensors["labels"].shape[0])})
    manifest = {
        "format": "glotok-bench/tokens",
        "tokenizer_sha256": "0" * 64,
        "dataset": "fake",
        "resolution": grid * 2,
        "codebook_sizes": sizes,
        "count": count,
        "shards": files,
        "complete": True,
        **(manifest_extra or {}),
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


class FakeTokenizer:
    """Decodes like a tokenizer: 2x nearest upsampling of the first 3 latent channels (tanh),
    and index grids through fixed random codebooks. Records what it was asked to decode."""

    def __init__(self, sizes: dict[str, int] | None = None, code_dim: int = 4):
        self.codebook_sizes = dict(DUAL if sizes is None else sizes)
        self.latent_channels = code_dim * len(self.codebook_sizes)
        g = torch.Generator().manual_seed(1)
        self.codebooks = {
            b: torch.randn(s, code_dim, generator=g) for b, s in self.codebook_sizes.items()
        }
        self.calls: list[str] = []

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self.calls.append("decode")
        assert latents.shape[1] == self.latent_channels
        return torch.tanh(latents[:, :3]).repeat_interleave(2, -1).repeat_interleave(2, -2)

    def decode_indices(self, indices: dict[str, torch.Tensor]) -> torch.Tensor:
        self.calls.append("decode_indices")
        latents = torch.cat(
            [self.codebooks[b][indices[b].cpu()].permute(0, 3, 1, 2) for b in self.codebook_sizes],
            1,
        )
        images = self.decode(latents)
        self.calls.pop()
        return images


# -- the reader -------------------------------------------------------------------------------


def test_token_set_loads_requested_keys_across_shards(tmp_path):
    from glotok_bench.generators.tokens import TokenSet

    tokens = TokenSet(write_fake_tokens(tmp_path / "t", count=10, shards=3))
    loaded = tokens.load(["indices.visual", "with_residual"])
    assert set(loaded) == {"labels", "indices.visual", "with_residual"}
    assert loaded["indices.visual"].shape == (10, 8, 8) and loaded["with_residual"].shape == (
        10,
        8,
        8,
        8,
    )
    context = tokens.context()
    assert context.grid_size == (8, 8) and context.channels == 8 and context.num_classes == 4
    assert context.codebook_sizes == DUAL
    assert tokens.context(num_classes=1000).num_classes == 1000


def test_token_set_errors_are_clear(tmp_path):
    from glotok_bench.generators.tokens import TokenSet

    with pytest.raises(DataError, match="no manifest.json"):
        TokenSet(tmp_path)
    root = write_fake_tokens(tmp_path / "t", manifest_extra={"complete": False})
    with pytest.raises(DataError, match="did not finish"):
        TokenSet(root)
    root = write_fake_tokens(tmp_path / "u", sizes={"codes": 32})
    with pytest.raises(DataError, match=r"has no \['indices.visual'\]"):
        TokenSet(root).load(["indices.visual"])
    root = write_fake_tokens(tmp_path / "v", manifest_extra={"count": 65})
    with pytest.raises(DataError, match="count 65"):
        TokenSet(root).load([])
    root = write_fake_tokens(
        tmp_path / "w", manifest_extra={"codebook_sizes": {"semantic": 16, "visual": 8}}
    )
    with pytest.raises(DataError, match="outside"):
        TokenSet(root).load(["indices.visual"])
    root = write_fake_tokens(tmp_path / "x", classes=4)
    with pytest.raises(DataError, match="num_classes is 2"):
        TokenSet(root).context(num_classes=2)
    # The reader checks the format the writer stamps (one reader for both users).
    root = write_fake_tokens(tmp_path / "y", manifest_extra={"format": "someone-else/tokens"})
    with pytest.raises(DataError, match="someone-else"):
        TokenSet(root)
    root = write_fake_tokens(tmp_path / "z", manifest_extra={"views": 2})
    with pytest.raises(DataError, match=r"V = 2"):
        TokenSet(root).load(["indices.visual"])


def test_batch_stream_is_a_function_of_seed_and_step(tmp_path):
    from glotok_bench.generators.tokens import BatchStream, TokenSet

    tensors = TokenSet(write_fake_tokens(tmp_path / "t", count=10)).load(["indices.visual"])
    stream = BatchStream(tensors, 4, seed=3)
    # Five steps of 4 cover two epochs of 10 exactly: each item twice.
    seen = torch.cat([stream.indices(s) for s in range(5)])
    assert torch.bincount(seen, minlength=10).tolist() == [2] * 10
    again = BatchStream(tensors, 4, seed=3)
    assert torch.equal(again.indices(4), stream.indices(4))  # no history needed
    assert not torch.equal(BatchStream(tensors, 4, seed=4).indices(0), stream.indices(0))
    batch = stream.batch(0)
    assert batch["indices.visual"].dtype == torch.long and batch["labels"].shape == (4,)
    # Two ranks split each global batch into disjoint halves.
    halves = [BatchStream(tensors, 4, seed=3, rank=r, world_size=2).indices(1) for r in range(2)]
    assert torch.equal(torch.cat(halves), stream.indices(1))
    with pytest.raises(ConfigError, match="not divisible"):
        BatchStream(tensors, 5, seed=0, world_size=2)
