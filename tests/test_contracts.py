"""Every registered component of every kind, run through its interface with tiny settings.

The pipeline, evaluator and leaderboard reach components only through
:mod:`glotok_bench.interfaces`; these tests hold each registered implementation (built-in
or installed plugin) to that interface, so a component that would only fail deep inside a
run fails here. Components are listed from the registry, never from a table of built-ins:
``TINY`` only shrinks settings where a default would be too slow here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from PIL import Image
from test_teachers import TINY_CLIP, TINY_DINOV2, clip_weights, dinov2_weights  # noqa: F401

from glotok_bench import interfaces
from glotok_bench.config import ComponentChoice
from glotok_bench.registry import get_registry
from glotok_bench.tokenizer.model import build_tokenizer, load_tokenizer_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
TINY_TOKENIZER = load_tokenizer_config(REPO / "tests" / "configs" / "tiny-16.toml")
REGISTRY = get_registry()

# (kind, name) -> options small enough for a test; anything not listed runs on its defaults.
TINY = {
    ("quantizer", "vq"): {"codebook_size": 32, "code_dim": 4},
    ("quantizer", "dual"): {"semantic_size": 16, "visual_size": 48, "code_dim": 4},
    ("residual_head", "transformer"): {"width": 16, "heads": 2},
    ("metric", "fid"): {"extractor": "standin", "cache": False},
    ("metric", "inception-score"): {"extractor": "standin", "splits": 2},
    ("metric", "uniformity"): {"samples": 12, "repeats": 1, "draws_per_image": 2, "tsne_iterations": 250},
    ("teacher", "patch-kmeans"): {"k": 4, "iterations": 3},
    ("teacher", "dinov2-kmeans"): {"model": TINY_DINOV2, "image_size": 28, "pool_grid": 2, "k": 4,
                                   "iterations": 3, "clustering": "global"},
    ("teacher", "clip-kmeans"): {"model": TINY_CLIP, "pool_grid": 2, "k": 4, "iterations": 3,
                                 "clustering": "global"},
}


def names(kind: str) -> list[str]:
    return REGISTRY.names(kind)


def tiny_config(kind: str, name: str, **extra):
    config_class = REGISTRY.config_class(kind, name)
    return config_class(**{**TINY.get((kind, name), {}), **extra})


def tokenizer_with(**components: ComponentChoice):
    return build_tokenizer(attrs.evolve(TINY_TOKENIZER, **components))


def images(n: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    coarse = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    """root/<split>/<class>/<image>: datasets read root, teachers one split's folder."""
    root = tmp_path_factory.mktemp("contract-images")
    rng = np.random.default_rng(0)
    for folder in ("train/", "val/"):
        for label in ("cat", "dog"):
            (root / f"{folder}{label}").mkdir(parents=True)
            for index in range(3):
                pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / f"{folder}{label}" / f"{index}.png")
    return root


# -- tokenizer parts ------------------------------------------------------------------------


@pytest.mark.parametrize("name", names("quantizer"))
def test_quantizer_reports_its_codebooks_from_its_config_and_quantizes(name):
    config = tiny_config("quantizer", name)
    # The label and dimension come from the Config alone: run labels never build a model.
    assert isinstance(config, interfaces.QuantizerConfig)
    label, semantic_dim = config.codebook_label(), config.semantic_dim()
    quantizer = REGISTRY.create("quantizer", name, config, in_channels=16)
    sizes = quantizer.codebook_sizes
    assert all(str(size) in label for size in sizes.values()), (label, sizes)
    assert semantic_dim == quantizer.code_dims.get("semantic", next(iter(quantizer.code_dims.values())))
    assert quantizer.out_channels == sum(quantizer.code_dims.values())
    out = quantizer(torch.randn(2, 16, 4, 4))
    assert set(out.branches) == set(sizes) and torch.isfinite(out.loss)
    indices = {branch: b.indices for branch, b in out.branches.items()}
    assert all(int(i.max()) < sizes[branch] for branch, i in indices.items())
    codes = quantizer.lookup(indices)
    for branch, b in out.branches.items():
        torch.testing.assert_close(codes[branch], b.quantized.detach())  # straight-through values
        assert quantizer.codebook_weight(branch).shape == (sizes[branch], quantizer.code_dims[branch])


@pytest.mark.parametrize("quantizer", names("quantizer"))
@pytest.mark.parametrize("head", names("residual_head"))
@pytest.mark.parametrize("autoencoder", names("autoencoder"))
def test_autoencoder_quantizer_and_residual_head_assemble_into_a_tokenizer(autoencoder, quantizer, head):
    tiny = TINY_TOKENIZER.autoencoder
    tokenizer = tokenizer_with(
        autoencoder=tiny if autoencoder == tiny.name else ComponentChoice(
            autoencoder, tiny_config("autoencoder", autoencoder)),
        quantizer=ComponentChoice(quantizer, tiny_config("quantizer", quantizer)),
        residual_head=ComponentChoice(head, tiny_config("residual_head", head)),
    )
    batch = images(2)
    out = tokenizer(batch)
    assert out.reconstruction.shape == batch.shape
    assert torch.isfinite(out.quantizer_loss) and torch.isfinite(out.residual_loss)
    assert out.encoding.with_residual.shape[1] == tokenizer.latent_channels
    grid = tokenizer.grid_size
    assert all(i.shape == (2, grid, grid) for i in out.encoding.indices.values())
    (out.reconstruction.square().mean() + out.residual_loss).backward()
    assert tokenizer.decoder_last_layer().grad is not None
    with torch.no_grad():
        again = tokenizer.decode_indices(out.encoding.indices)
    torch.testing.assert_close(again, out.reconstruction.detach(), atol=1e-4, rtol=1e-4)


# -- supervision and teachers ------------------------------------------------------------------


def _teacher_codebook_file(tmp_path: Path) -> Path:
    from safetensors.torch import save_file

    path = tmp_path / "teacher.safetensors"
    codes = torch.nn.functional.normalize(torch.randn(12, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    save_file({"codebook": codes}, str(path))
    return path


@pytest.mark.parametrize("name", names("semantic_supervision"))
def test_supervision_says_whether_it_needs_a_teacher_and_gives_a_loss(name, tmp_path):
    cls = REGISTRY.load("semantic_supervision", name)
    assert isinstance(cls.uses_teacher_codebook, bool)
    extra = {"teacher_file": str(_teacher_codebook_file(tmp_path))} if cls.uses_teacher_codebook else {}
    if "allow_random_init" in attrs.fields_dict(REGISTRY.config_class("semantic_supervision", name)):
        import test_teachers

        test_teachers._register_tiny_dinov2()
        extra.update(backbone="dinov2", model=TINY_DINOV2, image_size=28, allow_random_init=True, hidden_dim=32,
                     heads=2, depth=1, grid_size=4)
    supervision = REGISTRY.create("semantic_supervision", name, tiny_config("semantic_supervision", name, **extra),
                                  semantic_dim=4, device="cpu")
    codebook = torch.randn(16, 4, requires_grad=True)
    loss = supervision.loss(codebook, torch.randn(2, 4, 4, 4), images(2))
    assert loss.ndim == 0 and torch.isfinite(loss)
    json.dumps(supervision.describe())
    if cls.uses_teacher_codebook:  # relation learning moves the semantic codebook
        loss.backward()
        assert codebook.grad is not None and codebook.grad.abs().sum() > 0


def _teacher_config(name: str, image_root: Path, tmp_path: Path, request) -> object:
    config_class = REGISTRY.config_class("teacher", name)
    fields = attrs.fields_dict(config_class)
    extra = {}
    if "path" in fields:  # a checkpoint reader: put a codebook where its key says
        key = config_class().key
        torch.save({"model": {key: torch.randn(10, 4)}}, tmp_path / "peer.pt")
        extra["path"] = str(tmp_path / "peer.pt")
    if "weights_path" in fields:
        weights = request.getfixturevalue("dinov2_weights" if "dinov2" in name else "clip_weights")
        extra["weights_path"] = str(weights)
    return tiny_config("teacher", name, **extra)


@pytest.mark.parametrize("name", names("teacher"))
def test_teacher_labels_itself_and_builds_unit_codes(name, image_root, tmp_path, request):
    cls = REGISTRY.load("teacher", name)
    config = _teacher_config(name, image_root, tmp_path, request)
    label = interfaces.teacher_label(name, cls, config)
    assert label.startswith(name), label
    defaults_label = interfaces.teacher_label(name, cls, type(config)())
    assert defaults_label == name or config == type(config)() or label != defaults_label
    with_data = getattr(cls, "with_data", None)
    if with_data is not None:
        config = with_data(config, image_root / "train")
    teacher = cls(config)
    codes = teacher.build(tmp_path / "cache", "cpu")
    assert codes.ndim == 2 and codes.shape[0] >= 2
    torch.testing.assert_close(codes.norm(dim=1), torch.ones(codes.shape[0]))
    if hasattr(teacher, "cache_file"):
        assert Path(teacher.cache_file(tmp_path / "cache")).is_file()


# -- metrics ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    torch.manual_seed(0)
    return build_tokenizer(TINY_TOKENIZER).eval()


def _batches(tokenizer, count: int = 2):
    from glotok_bench.eval.batch import EvalBatch

    out = []
    for b in range(count):
        real = images(6, seed=b)
        with torch.no_grad():
            result = tokenizer(real)
        out.append(EvalBatch(real=real, fake=result.reconstruction.clamp(-1, 1), encoding=result.encoding,
                             sample_ids=torch.arange(6 * b, 6 * b + 6)))
    return out


@pytest.mark.parametrize("name", names("metric"))
def test_metric_merges_like_one_pass_and_writes_its_own_artifacts(name, tokenizer, tmp_path, monkeypatch):
    from glotok_bench.tokenizer.perceptual import write_random_lpips_weights

    vgg, lin = write_random_lpips_weights(tmp_path / "weights")
    monkeypatch.setenv("GLOTOK_WEIGHTS_VGG16", str(vgg))
    monkeypatch.setenv("GLOTOK_WEIGHTS_LPIPS_VGG", str(lin))
    context = {"device": "cpu", "data_protocol": {"dataset": "contract"},
               "codebook_sizes": tokenizer.codebook_sizes}
    config = tiny_config("metric", name)
    batches = _batches(tokenizer)
    whole = REGISTRY.create("metric", name, config, **context)
    assert isinstance(whole, interfaces.Metric)
    for batch in batches:
        whole.update(batch)
    first, second = (REGISTRY.create("metric", name, config, **context) for _ in range(2))
    first.update(batches[0])
    second.update(batches[1])
    merged = first.merge(second) or first
    expected, got = whole.compute(), merged.compute()
    assert expected and set(got) == set(expected)
    for key, result in expected.items():
        assert set(result) >= {"value", "protocol"}, key
        json.dumps(result["protocol"])
        if math.isfinite(result["value"]):
            assert got[key]["value"] == pytest.approx(result["value"], rel=1e-6, abs=1e-9), key
    artifacts = interfaces.write_metric_artifacts(whole, tmp_path / "out")
    assert all(Path(path).is_file() for path in artifacts.values()), artifacts


# -- generators and datasets ----------------------------------------------------------------------


def _generator_context(cls, grid: int, channels: int) -> dict:
    branches = {"codes": 32} if "branch" in attrs.fields_dict(cls.Config) else {"semantic": 16, "visual": 48}
    return {"codebook_sizes": branches, "grid_size": grid, "channels": channels, "num_classes": 3}


@pytest.mark.parametrize("name", names("generator"))
def test_generator_trains_and_samples_on_a_tiny_token_set(name):
    cls = REGISTRY.load("generator", name)
    with torch.device("meta"):  # any size builds here, with no memory
        model = cls(cls.Config(), **_generator_context(cls, grid=16, channels=16))
    assert model.config == cls.Config() and model.data_keys
    if sum(p.numel() for p in model.parameters()) > 5_000_000:
        return  # a paper size: too slow to train here
    context = _generator_context(cls, grid=4, channels=8)
    torch.manual_seed(0)
    model = cls(cls.Config(), **context)
    batch = {"labels": torch.tensor([0, 2])}
    for key in model.data_keys:
        if key.startswith("indices."):
            batch[key] = torch.randint(0, context["codebook_sizes"][key.split(".", 1)[1]], (2, 4, 4))
        else:
            batch[key] = torch.randn(2, 8, 4, 4)
    loss = model.loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    model.eval()
    sample = model.sample(torch.tensor([1]), generator=torch.Generator().manual_seed(0))
    tensors = sample.values() if isinstance(sample, dict) else [sample]
    assert all(t.shape[0] == 1 and t.shape[-2:] == (4, 4) for t in tensors)


@pytest.mark.parametrize("name", names("dataset"))
def test_dataset_yields_images_in_range_with_a_protocol(name, image_root, demo_root):
    fields = attrs.fields_dict(REGISTRY.config_class("dataset", name))
    extra = {}
    if "root" in fields:
        extra["root"] = str(image_root)
    if "cache_dir" in fields:
        extra["cache_dir"] = str(demo_root)
    dataset = REGISTRY.create("dataset", name, tiny_config("dataset", name, **extra),
                              split="val", resolution=32, train=False)
    assert len(dataset) > 0
    item = dataset[0]
    image = item[0]
    assert image.shape == (3, 32, 32) and image.min() >= -1 and image.max() <= 1
    json.dumps(dataset.protocol())
