"""``tokenize``: unreadable images skipped and counted, a folder that appears whole or not at
all, and several views per image (flips, ten crops) for the generators' token stream."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glotok_bench.errors import DataError
from glotok_bench.tokenizer import standalone_registry

REGISTRY = standalone_registry()

# Tiny models run faster on one thread, and far faster when the 2 cores are shared.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def checkpoint(tmp_path) -> Path:
    from glotok_bench.tokenizer.checkpoint import save_checkpoint
    from glotok_bench.tokenizer.model import build_tokenizer, load_tokenizer_config

    torch.manual_seed(0)
    config = load_tokenizer_config(Path(__file__).parent / "configs" / "tiny-16.toml")
    return save_checkpoint(tmp_path / "tok.pt", build_tokenizer(config, registry=REGISTRY))


def image_folder(root: Path, count: int = 5, corrupt: int = 1) -> Path:
    """root/train/<class>/<image>: ``count`` random PNGs and ``corrupt`` files that are not images."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / "train" / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (root / "train" / "class0").mkdir(parents=True, exist_ok=True)
    for i in range(corrupt):
        (root / "train" / "class0" / f"broken{i}.png").write_bytes(b"not a png at all")
    return root


def folder_dataset(root: Path, resolution: int = 16):
    from glotok_bench.data.imagefolder import ImageFolderDataset

    return ImageFolderDataset(
        ImageFolderDataset.Config(root=str(root)), split="train", resolution=resolution
    )


def test_an_unreadable_image_is_skipped_and_counted(tmp_path, checkpoint):
    from glotok_bench.generators.tokens import TokenSet
    from glotok_bench.tokenizer.tokenize import tokenize_dataset

    data = folder_dataset(image_folder(tmp_path / "images", count=5, corrupt=1))
    with pytest.warns(UserWarning, match="broken0.png"):
        path = tokenize_dataset(
            checkpoint, data, tmp_path / "tok", batch_size=2, shard_size=3, registry=REGISTRY
        )
    manifest = json.loads(path.read_text())
    assert manifest["count"] == 5 and manifest["skipped"]["count"] == 1
    assert "broken0.png" in manifest["skipped"]["files"][0]
    assert TokenSet(tmp_path / "tok").labels().shape == (5,)


def test_a_failed_tokenize_leaves_no_folder_and_keeps_an_older_one(tmp_path, checkpoint):
    from glotok_bench.tokenizer.tokenize import tokenize_dataset

    unreadable = folder_dataset(image_folder(tmp_path / "bad", count=0, corrupt=2))
    with pytest.warns(UserWarning), pytest.raises(DataError, match="no readable image"):
        tokenize_dataset(checkpoint, unreadable, tmp_path / "tok", registry=REGISTRY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "tok.pt"]
    good = [(torch.rand(3, 16, 16) * 2 - 1, 0) for _ in range(3)]
    tokenize_dataset(checkpoint, good, tmp_path / "tok", registry=REGISTRY)
    before = {p.name: p.read_bytes() for p in (tmp_path / "tok").iterdir()}
    wrong_size = [(torch.rand(3, 16, 16), 0), (torch.rand(3, 8, 8), 0)]
    with pytest.raises(DataError, match="16, 16"):
        tokenize_dataset(
            checkpoint, wrong_size, tmp_path / "tok", batch_size=1, overwrite=True, registry=REGISTRY
        )
    assert {p.name: p.read_bytes() for p in (tmp_path / "tok").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "tok", "tok.pt"]


def test_flip_views_are_the_encodings_of_the_mirrored_images(tmp_path, checkpoint):
    from safetensors.torch import load_file

    from glotok_bench.generators.tokens import BatchStream, TokenSet
    from glotok_bench.tokenizer.checkpoint import load_tokenizer
    from glotok_bench.tokenizer.tokenize import TokenizeConfig, tokenize_dataset

    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 16, 16, generator=g) * 2 - 1
    tokenize_dataset(
        checkpoint, [(x, i % 2) for i, x in enumerate(images)], tmp_path / "tok", batch_size=4,
        registry=REGISTRY, options=TokenizeConfig(views="flip"),
    )  # fmt: skip
    shard = load_file(tmp_path / "tok" / "shard-00000.safetensors")
    assert shard["indices.visual"].shape == (6, 2, 8, 8) and shard["labels"].shape == (6,)
    tokenizer, _ = load_tokenizer(checkpoint, registry=REGISTRY)
    with torch.no_grad():
        mirrored = tokenizer.encode(images.flip(-1))
    assert torch.equal(shard["indices.visual"][:, 1].long(), mirrored.indices["visual"])
    tokens = TokenSet(tmp_path / "tok")
    context = tokens.context()
    assert context.grid_size == (8, 8) and context.channels == 8
    tensors = tokens.load(["indices.visual", "with_residual"])
    batch = BatchStream(tensors, 4, seed=0).batch(0)
    assert batch["indices.visual"].shape == (4, 8, 8) and batch["with_residual"].shape == (4, 8, 8, 8)


def test_the_stream_draws_each_images_view_from_seed_epoch_and_index():
    from glotok_bench.generators.tokens import BatchStream

    count, views = 12, 3
    # Item i's view v is recognisable: its value is 10 * i + v.
    grid = (10 * torch.arange(count)[:, None] + torch.arange(views)).view(count, views, 1, 1)
    tensors = {"labels": torch.arange(count), "indices.visual": grid.expand(count, views, 2, 2)}

    def epoch_views(batch_size: int, epoch: int) -> dict[int, int]:
        stream = BatchStream(tensors, batch_size, seed=5)
        seen = {}
        for step in range(epoch * count // batch_size, (epoch + 1) * count // batch_size):
            batch = stream.batch(step)
            for label, value in zip(batch["labels"].tolist(), batch["indices.visual"][:, 0, 0].tolist(), strict=True):
                assert value // 10 == label
                seen[label] = value % 10
        return seen

    first = epoch_views(4, 0)
    assert len(first) == count and first == epoch_views(6, 0)  # batch size does not matter
    later = [epoch_views(4, e) for e in range(1, 4)]
    assert any(v != first for v in later)  # a new draw each epoch
    assert set().union(*(set(v.values()) for v in [first, *later])) == {0, 1, 2}


def test_ten_crops_are_torchvisions_corners_centre_and_their_mirrors():
    from glotok_bench.tokenizer.tokenize import TokenizeConfig, make_views

    assert TokenizeConfig(views="ten-crop").input_resolution(256) == 281  # int(256 * 1.1)
    images = torch.arange(2 * 3 * 11 * 11, dtype=torch.float).view(2, 3, 11, 11)
    views = make_views(images, "ten-crop", 8)
    assert views.shape == (2, 10, 3, 8, 8)
    assert torch.equal(views[:, 0], images[..., :8, :8])  # top left
    assert torch.equal(views[:, 1], images[..., :8, 3:])  # top right
    assert torch.equal(views[:, 4], images[..., 2:10, 2:10])  # centre: round(3 / 2) = 2
    assert torch.equal(views[:, 5], images.flip(-1)[..., :8, :8])


def test_auto_views_follow_the_generators_base_code():
    from glotok_bench.generators.presets import AR_TINY, FAR_TINY, XAR_TINY
    from glotok_bench.tokenizer.tokenize import TokenizeConfig

    auto = TokenizeConfig(views="auto")
    assert [auto.for_generator(g).views for g in (FAR_TINY, XAR_TINY, AR_TINY)] == [
        "ten-crop",
        "flip",
        "none",
    ]
    assert TokenizeConfig(views="flip").for_generator(FAR_TINY).views == "flip"
