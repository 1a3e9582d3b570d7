"""Teacher sources: checkpoint readers, the disk cache, k-means and the encoder teachers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from glotok_bench.errors import CheckpointError, ConfigError, MissingWeightsError
from glotok_bench.teachers.backbones import load_backbone
from glotok_bench.teachers.cache import CODEBOOK_KEY, file_digest
from glotok_bench.teachers.codebook_file import (
    FileTeacher,
    FQGANTeacher,
    ImageFolderTeacher,
    LlamaGenTeacher,
)
from glotok_bench.teachers.feature_kmeans import ClipKMeansTeacher, DinoV2KMeansTeacher
from glotok_bench.teachers.kmeans import assign, kmeans

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_CLIP = "glotok-test-tiny-clip"


def _released_checkpoint(path: Path, key: str, shape: tuple[int, int], *, ema: bool = False):
    """A checkpoint in the LlamaGen/FQGAN outer layout: model (+ ema), optimizer, ..."""
    generator = torch.Generator().manual_seed(0)
    model = {
        key: 3.0 * torch.randn(*shape, generator=generator),
        "decoder.conv_in.weight": torch.randn(4, 4),
    }
    checkpoint = {"model": model, "optimizer": {"state": {}}, "steps": 100}
    if ema:
        checkpoint["ema"] = {k: v + 1.0 for k, v in model.items()}
    torch.save(checkpoint, path)
    return checkpoint


@pytest.mark.parametrize(
    ("teacher_cls", "key", "shape"),
    [
        (LlamaGenTeacher, "quantize.embedding.weight", (64, 8)),
        (FQGANTeacher, "quantize_sem.embedding.weight", (64, 8)),
        (ImageFolderTeacher, "quantizes.1.embedding.weight", (32, 32)),
    ],
)
@pytest.mark.parametrize("weights", ["model", "ema"])
def test_released_checkpoints_give_their_normalised_codebook(
    tmp_path, teacher_cls, key, shape, weights
):
    checkpoint = _released_checkpoint(tmp_path / "ckpt.pt", key, shape, ema=True)
    teacher = teacher_cls(teacher_cls.Config(path=str(tmp_path / "ckpt.pt"), weights=weights))
    codebook = teacher.build(tmp_path / "cache")
    expected = F.normalize(checkpoint[weights][key], dim=1)
    torch.testing.assert_close(codebook, expected)
    assert codebook.dtype == torch.float32


def test_missing_key_lists_the_keys_present(tmp_path):
    _released_checkpoint(tmp_path / "llamagen.pt", "quantize.embedding.weight", (16, 8))
    teacher = FQGANTeacher(FQGANTeacher.Config(path=str(tmp_path / "llamagen.pt")))
    with pytest.raises(CheckpointError) as caught:
        teacher.build(tmp_path / "cache")
    message = str(caught.value)
    assert "quantize_sem.embedding.weight" in message
    assert "quantize.embedding.weight [16, 8]" in message and "decoder.conv_in.weight" in message


def test_missing_ema_lists_top_level_keys(tmp_path):
    _released_checkpoint(tmp_path / "ckpt.pt", "quantize.embedding.weight", (16, 8))
    teacher = LlamaGenTeacher(LlamaGenTeacher.Config(path=str(tmp_path / "ckpt.pt"), weights="ema"))
    with pytest.raises(
        CheckpointError, match="no ema weights.*top-level keys are: model, optimizer"
    ):
        teacher.build(tmp_path / "cache")


class _RunsCodeWhenUnpickled:
    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_code_is_refused_and_not_run(tmp_path):
    payload = _RunsCodeWhenUnpickled()
    payload.marker = tmp_path / "code-ran"
    torch.save(
        {"model": {"quantize.embedding.weight": torch.randn(4, 2)}, "args": payload},
        tmp_path / "evil.pt",
    )
    teacher = LlamaGenTeacher(LlamaGenTeacher.Config(path=str(tmp_path / "evil.pt")))
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        teacher.build(tmp_path / "cache")
    assert not payload.marker.exists()


def test_torchscript_archives_are_refused(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "scripted.pt")
    teacher = FileTeacher(FileTeacher.Config(path=str(tmp_path / "scripted.pt"), key="weight"))
    with pytest.raises(CheckpointError, match="TorchScript"):
        teacher.build(tmp_path / "cache")


def test_file_teacher_reads_safetensors_and_bare_tensors(tmp_path):
    from safetensors.torch import save_file

    codes = torch.randn(20, 5)
    save_file({"centres": codes}, str(tmp_path / "centres.safetensors"))
    torch.save(codes.double(), tmp_path / "bare.pt")
    for path, key in (
        (tmp_path / "centres.safetensors", "centres"),
        (tmp_path / "bare.pt", "ignored"),
    ):
        built = FileTeacher(FileTeacher.Config(path=str(path), key=key)).build(tmp_path / "cache")
        torch.testing.assert_close(built, F.normalize(codes, dim=1))
    with pytest.raises(MissingWeightsError, match="does not exist"):
        FileTeacher(FileTeacher.Config(path=str(tmp_path / "absent.pt"))).build(tmp_path / "cache")
    with pytest.raises(ConfigError, match="needs `path`"):
        FileTeacher(FileTeacher.Config()).build(tmp_path / "cache")


def test_cache_hit_does_not_recompute_and_content_changes_the_key(tmp_path, monkeypatch):
    from safetensors import safe_open

    path = tmp_path / "codes.pt"
    torch.save({"codebook": torch.randn(10, 4)}, path)
    teacher = FileTeacher(FileTeacher.Config(path=str(path)))
    calls = []
    original = FileTeacher.compute
    monkeypatch.setattr(
        FileTeacher, "compute", lambda self, device: calls.append(1) or original(self, device)
    )

    first = teacher.build(tmp_path / "cache")
    second = teacher.build(tmp_path / "cache")
    assert len(calls) == 1
    torch.testing.assert_close(first, second)
    cache_file = teacher.cache_file(tmp_path / "cache")
    with safe_open(str(cache_file), "pt") as handle:
        assert json.loads(handle.metadata()["spec"])["key"] == "codebook"
        assert handle.keys() == [CODEBOOK_KEY]

    torch.save({"codebook": torch.randn(12, 4)}, path)  # new content, new size
    third = teacher.build(tmp_path / "cache")
    assert len(calls) == 2 and third.shape == (12, 4)
    assert teacher.cache_file(tmp_path / "cache") != cache_file


def test_file_digest_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    import glotok_bench.weights as weights

    path = tmp_path / "weights.bin"
    path.write_bytes(b"abc")
    hashed = []
    original = weights.file_sha256
    monkeypatch.setattr(weights, "file_sha256", lambda p: hashed.append(p) or original(p))
    first = file_digest(path, tmp_path)
    assert file_digest(path, tmp_path) == first and len(hashed) == 1
    path.write_bytes(b"abcd")
    assert file_digest(path, tmp_path) != first and len(hashed) == 2


@pytest.mark.parametrize("batch_size", [0, 64])
def test_kmeans_recovers_separated_clusters(batch_size):
    generator = torch.Generator().manual_seed(0)
    truth = 10 * torch.randn(5, 16, generator=generator)
    labels = torch.arange(500) % 5
    points = truth[labels] + 0.1 * torch.randn(500, 16, generator=generator)
    centres = kmeans(points, 5, iterations=60, batch_size=batch_size, seed=1)
    # Every true centre has a found centre next to it, and points keep their grouping.
    nearest = torch.cdist(truth, centres).min(1).values
    assert nearest.max() < 0.5
    found = assign(points, centres)
    assert len(set(zip(labels.tolist(), found.tolist(), strict=True))) == 5
    again = kmeans(points, 5, iterations=60, batch_size=batch_size, seed=1)
    torch.testing.assert_close(again, centres)


def test_kmeans_needs_enough_points():
    with pytest.raises(ConfigError, match="cannot make"):
        kmeans(torch.randn(3, 2), 4)


# -- encoder teachers with tiny random models saved in the real key layouts ---------------


TINY_DINOV2 = "glotok_test_tiny_dinov2"


def _register_tiny_dinov2() -> None:
    """A 2-block, 64-wide DINOv2 ViT/14 with the real key names and preprocessing."""
    import timm
    from timm.models import register_model

    if TINY_DINOV2 in timm.list_models(TINY_DINOV2):
        return

    def glotok_test_tiny_dinov2(pretrained: bool = False, **kwargs):
        options = {"depth": 2, "embed_dim": 64, "num_heads": 2, **kwargs}
        return timm.create_model("vit_small_patch14_dinov2", pretrained=False, **options)

    register_model(glotok_test_tiny_dinov2)


@pytest.fixture(scope="module")
def dinov2_weights(tmp_path_factory) -> Path:
    """Tiny DINOv2 weights in the original release layout (mask_token, 518 px grid)."""
    import timm

    _register_tiny_dinov2()
    folder = tmp_path_factory.mktemp("dinov2")
    model = timm.create_model(TINY_DINOV2, img_size=518, num_classes=0)
    state = dict(model.state_dict())
    state["mask_token"] = torch.zeros(1, state["cls_token"].shape[-1])
    torch.save(state, folder / "dinov2_tiny_pretrain.pth")
    return folder / "dinov2_tiny_pretrain.pth"


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory) -> Path:
    """A tiny open_clip model registered under TINY_CLIP and its full state dict."""
    import open_clip

    folder = tmp_path_factory.mktemp("clip")
    config = {
        "embed_dim": 24,
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": 56,
            "layers": 2,
            "width": 32,
            "patch_size": 14,
            "head_width": 16,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
    }
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    model = open_clip.create_model(TINY_CLIP, pretrained=None)
    torch.save(model.state_dict(), folder / "tiny_clip.pt")
    return folder / "tiny_clip.pt"


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir()
        for index in range(3):
            pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    (root / "dog" / "broken.png").write_bytes(b"not an image")
    return root


def test_dinov2_backbone_loads_the_release_layout(dinov2_weights):
    backbone = load_backbone("dinov2", TINY_DINOV2, str(dinov2_weights), image_size=56)
    saved = torch.load(dinov2_weights, weights_only=True)
    torch.testing.assert_close(
        backbone.model.blocks[0].attn.qkv.weight, saved["blocks.0.attn.qkv.weight"]
    )
    images = torch.rand(2, 3, 40, 40) * 2 - 1
    assert backbone.patch_features(images, layer=-2).shape == (2, 64, 4, 4)
    assert backbone.global_embedding(images).shape == (2, 64)
    assert not any(p.requires_grad for p in backbone.parameters())
    with pytest.raises(MissingWeightsError, match="weights_path"):
        load_backbone("dinov2", TINY_DINOV2, "", image_size=56)


def test_clip_backbone_loads_visual_weights_and_rejects_other_files(clip_weights, tmp_path):
    backbone = load_backbone("clip", TINY_CLIP, str(clip_weights))
    saved = torch.load(clip_weights, weights_only=True)
    torch.testing.assert_close(backbone.visual.proj, saved["visual.proj"])
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    assert backbone.patch_features(images).shape == (3, 24, 4, 4)  # projected tokens
    assert backbone.global_embedding(images).shape == (3, 24)
    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no 'visual.\\*' keys.*encoder.weight"):
        load_backbone("clip", TINY_CLIP, str(tmp_path / "other.pt"))


def test_dinov2_kmeans_teacher_builds_once_per_class(
    dinov2_weights, image_folder, tmp_path, monkeypatch
):
    config = DinoV2KMeansTeacher.Config(
        data_root=str(image_folder),
        weights_path=str(dinov2_weights),
        model=TINY_DINOV2,
        image_size=56,
        pool_grid=2,
        k=6,
        batch_size=2,
    )
    teacher = DinoV2KMeansTeacher(config)
    calls = []
    original = DinoV2KMeansTeacher.compute
    monkeypatch.setattr(
        DinoV2KMeansTeacher, "compute", lambda self, d: calls.append(1) or original(self, d)
    )
    with pytest.warns(UserWarning, match="broken.png"):
        codebook = teacher.build(tmp_path)
    assert codebook.shape == (6, 64)
    torch.testing.assert_close(codebook.norm(dim=1), torch.ones(6))
    assert torch.equal(teacher.build(tmp_path), codebook) and len(calls) == 1
    other_layer = DinoV2KMeansTeacher(
        DinoV2KMeansTeacher.Config(**{**vars_of(config), "layer": -2})
    )
    assert other_layer.cache_file(tmp_path) != teacher.cache_file(tmp_path)


def test_clip_kmeans_teacher_clusters_globally(clip_weights, image_folder, tmp_path):
    config = ClipKMeansTeacher.Config(
        data_root=str(image_folder),
        weights_path=str(clip_weights),
        model=TINY_CLIP,
        clustering="global",
        images_per_class=2,
        pool_grid=2,
        k=5,
    )
    codebook = ClipKMeansTeacher(config).build(tmp_path)
    assert codebook.shape == (5, 24)
    too_many = ClipKMeansTeacher(ClipKMeansTeacher.Config(**{**vars_of(config), "k": 17}))
    with pytest.raises(ConfigError, match="cannot make 17 centres from 16"):
        too_many.build(tmp_path)


def vars_of(config) -> dict:
    import attrs

    return attrs.asdict(config)
