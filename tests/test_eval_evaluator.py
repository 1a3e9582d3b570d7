"""The streaming evaluator, Fig. 4 and LPIPS, on a tiny fake tokenizer with the real interface."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path
from types import SimpleNamespace

import attrs
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from glotok_bench.eval.batch import EvalBatch
from glotok_bench.eval.evaluator import (
    EvalOptions,
    build_metrics,
    evaluate_tokenizer,
    run_evaluation,
)
from glotok_bench.eval.extractors import build_extractor
from glotok_bench.eval.fidelity import FrechetDistance, InceptionScore
from glotok_bench.eval.fig4 import RetentionConfig, keep_mask, retention_reconstructions
from glotok_bench.eval.standin import STANDIN_NAME
from glotok_bench.eval.uniformity import LatentUniformity


class FakeTokenizer(torch.nn.Module):
    """The tokenizer interface at toy scale: 4x4 average-pooled colour, split in halves.

    semantic = pooled / 2 plus its luminance (4 channels, 8 codes), visual = pooled / 2 plus
    zeros (4 channels, 8 codes); decode adds the two colour halves back and upsamples, so a
    full reconstruction is the blurred image and dropping either branch visibly darkens it.
    """

    codebook_sizes = {"semantic": 8, "visual": 8}

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device

    @staticmethod
    def _quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        levels = torch.round((x.clamp(-1, 1) + 1) * 3.5)  # 8 levels
        return levels / 3.5 - 1, levels[:, 0].long()

    def encode(self, images: torch.Tensor) -> SimpleNamespace:
        pooled = F.avg_pool2d(images, 4)
        semantic = torch.cat([pooled / 2, pooled.mean(1, keepdim=True)], 1)
        visual = torch.cat([pooled / 2, torch.zeros_like(pooled[:, :1])], 1)
        branches, indices = {}, {}
        for name, continuous in (("semantic", semantic), ("visual", visual)):
            quantized, idx = self._quantize(continuous)
            branches[name] = SimpleNamespace(
                continuous=continuous, quantized=quantized, with_residual=quantized
            )
            indices[name] = idx
        return SimpleNamespace(
            indices=indices,
            quantized=torch.cat([branches["semantic"].quantized, branches["visual"].quantized], 1),
            with_residual=torch.cat(
                [branches["semantic"].with_residual, branches["visual"].with_residual], 1
            ),
            branches=branches,
        )

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        colour = latents[:, 0:3] + latents[:, 4:7] + self.anchor
        return F.interpolate(colour, scale_factor=4, mode="nearest")

    def forward(self, images: torch.Tensor) -> SimpleNamespace:
        encoding = self.encode(images)
        return SimpleNamespace(
            reconstruction=self.decode(encoding.with_residual), encoding=encoding
        )


class PhotoCrops(torch.utils.data.Dataset):
    """glotok_bench's dataset item format (image, label, index, error) plus protocol()."""

    def __init__(self, count: int = 48, size: int = 32):
        import numpy as np
        import skimage.data

        photo = skimage.data.chelsea()
        rng = np.random.default_rng(0)
        crops = []
        for _ in range(count):
            y, x = rng.integers(photo.shape[0] - size), rng.integers(photo.shape[1] - size)
            crops.append(photo[y : y + size, x : x + size])
        self.images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], 0, index, ""

    def protocol(self) -> dict:
        return {
            "dataset": "chelsea-crops", "split": "val", "count": len(self), "resolution": 32,
            "crop": "random 32 px crops", "resize_filter": "none", "manifest_sha256": "12" * 32,
        }  # fmt: skip


def _options(tmp_path: Path, **changes) -> EvalOptions:
    options = EvalOptions(
        fid=FrechetDistance.Config(extractor="standin", cache_dir=str(tmp_path / "stats")),
        inception_score=InceptionScore.Config(extractor="standin", splits=2),
        # One small t-SNE run: the repeats and their spread are tested in test_eval_uniformity.
        uniformity=LatentUniformity.Config(
            samples=90, repeats=1, draws_per_image=2, perplexity=10.0
        ),
        sample_images=4,
        fig4_images=2,
        progress=False,
    )
    return attrs.evolve(options, **changes)


def test_evaluation_reports_every_metric_with_its_protocol_and_writes_pngs(tmp_path):
    result = run_evaluation(
        FakeTokenizer(), PhotoCrops(), _options(tmp_path), batch_size=16, out_dir=tmp_path
    )
    metrics = result.metrics
    expected = {
        f"rfid@{STANDIN_NAME}", f"is@{STANDIN_NAME}", f"is_std@{STANDIN_NAME}", "psnr", "ssim",
        "usage/semantic", "usage/visual", "perplexity/semantic", "perplexity/visual",
        "uniformity/density_cv", "uniformity/normalized_entropy", "uniformity/gini",
    }  # fmt: skip
    assert expected <= set(metrics)
    assert "rfid" not in metrics  # the stand-in never reports under the Inception name
    fid = metrics[f"rfid@{STANDIN_NAME}"]["protocol"]
    for field in (
        "dataset",
        "split",
        "count",
        "resolution",
        "crop",
        "extractor",
        "extractor_weights_sha256",
    ):
        assert field in fid, field
    assert fid["count"] == 48 and fid["extractor"] == STANDIN_NAME
    assert metrics["psnr"]["protocol"]["count"] == 48
    assert 15 < metrics["psnr"]["value"] < 40  # a 4x4 blur of a photo
    assert metrics["usage/semantic"]["value"] > 0

    info = result.info
    assert info["images"] == 48 and info["batches"] == 3
    assert info["images_per_s"] > 0 and info["peak_memory_bytes"] > 0
    assert info["device"]["type"] == "cpu" and "torch" in info["versions"]
    assert "lpips" in info["skipped_metrics"] and "vgg16" in info["skipped_metrics"]["lpips"]
    json.dumps(result.as_dict())  # the record is plain JSON

    with Image.open(info["artifacts"]["reconstructions_png"]) as png:
        assert png.size == (4 * 34 + 2, 2 * 34 + 2)  # 4 columns, originals over reconstructions
    with Image.open(info["artifacts"]["fig4_png"]) as png:
        assert png.size == (9 * 34 + 2, 14 + 2 * 34 + 2)  # original + 2 x 4 ratios, labelled
    written = json.loads(Path(info["artifacts"]["uniformity_json"]).read_text())
    assert written["uniformity/gini"] == metrics["uniformity/gini"]
    with Image.open(info["artifacts"]["uniformity_png"]) as png:
        assert png.width > 100 and png.height > 100


def test_second_evaluation_reuses_the_reference_statistics(tmp_path):
    options = _options(tmp_path, uniformity=None, inception_score=None, fig4=None)
    first = run_evaluation(FakeTokenizer(), PhotoCrops(), options, batch_size=16)
    second = run_evaluation(FakeTokenizer(), PhotoCrops(), options, batch_size=24)
    key = f"rfid@{STANDIN_NAME}"
    assert first.metrics[key]["protocol"]["reference"] == "computed"
    assert second.metrics[key]["protocol"]["reference"] == "cache"
    assert second.metrics[key]["value"] == pytest.approx(first.metrics[key]["value"], rel=1e-9)


class _CountingExtractor:
    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, images):
        self.calls += 1
        return self.inner(images)


def test_fid_and_is_share_one_extractor_pass_per_batch():
    fid = FrechetDistance(FrechetDistance.Config(extractor="standin", cache=False))
    score = InceptionScore(InceptionScore.Config(extractor="standin"))
    counting = _CountingExtractor(build_extractor("standin"))
    fid.extractor = score.extractor = counting
    images = PhotoCrops(8).images
    batch = EvalBatch(real=images, fake=images.flip(-1))
    fid.update(batch)
    score.update(batch)
    assert counting.calls == 2  # real once, fake once; IS reused the fake features


def test_evaluator_streams_without_keeping_batches_alive():
    dataset = PhotoCrops(64)
    alive: list[weakref.ref] = []

    def loader():
        for start in range(0, 64, 8):
            images = dataset.images[start : start + 8].clone()
            alive.append(weakref.ref(images))
            yield {"images": images, "indices": torch.arange(start, start + 8), "skipped": []}

    metrics, _ = build_metrics(
        EvalOptions(
            fid=FrechetDistance.Config(extractor="standin", cache=False),
            uniformity=None,
            lpips=None,
        ),
        device="cpu",
        data_protocol={},
        codebook_sizes=FakeTokenizer.codebook_sizes,
    )
    result = evaluate_tokenizer(
        FakeTokenizer(), loader(), metrics, sample_images=4, fig4=None, progress=False
    )
    gc.collect()
    assert result.info["images"] == 64
    assert sum(ref() is not None for ref in alive) <= 1  # only the batch the PNG samples came from


def test_fig4_keeps_semantic_and_visual_fractions_as_configured():
    tokenizer = FakeTokenizer()
    images = PhotoCrops(2).images
    labels, grid = retention_reconstructions(tokenizer, images)
    assert labels == ["orig", "S+V25", "S+V50", "S+V75", "S+V100", "V25", "V50", "V75", "V100"]
    assert grid.shape == (2, 9, 3, 32, 32)
    full = tokenizer(images).reconstruction
    torch.testing.assert_close(grid[:, 4], full)  # everything kept = the normal reconstruction
    assert not torch.allclose(grid[:, 8], full)  # dropping the semantic half changes it
    assert not torch.allclose(grid[:, 1], grid[:, 4])  # so does dropping visual channels
    latents = torch.ones(1, 8, 4, 4)
    assert keep_mask(latents, 0.25, "channels", 0).sum() == 2
    assert keep_mask(latents, 0.5, "positions", 0).sum() == 8
    with pytest.raises(ValueError, match="needs a 'nope' branch"):
        retention_reconstructions(
            tokenizer, images, RetentionConfig(visual_branch="visual", semantic_branch="nope")
        )


@pytest.fixture(scope="module")
def random_lpips_files(tmp_path_factory):
    """VGG16 conv layers and LPIPS linear layers with random values, in the real layouts."""
    from glotok_bench.tokenizer.perceptual import write_random_lpips_weights

    return write_random_lpips_weights(tmp_path_factory.mktemp("lpips"))


def test_lpips_runs_when_its_weights_are_present(random_lpips_files):
    from glotok_bench.eval.lpips_metric import LPIPSMetric

    vgg, lin = random_lpips_files
    metric = LPIPSMetric(LPIPSMetric.Config(vgg_weights=str(vgg), lin_weights=str(lin)))
    images = PhotoCrops(4).images
    noisy = (
        images + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    ).clamp(-1, 1)
    assert metric.scores(EvalBatch(real=images, fake=images)).abs().max() < 1e-6
    metric.update(EvalBatch(real=images, fake=noisy))
    result = metric.compute()["lpips"]
    assert result["value"] > 0 and result["protocol"]["count"] == 4
    assert result["protocol"]["weights"]["vgg16"]["file"] == vgg.name


class MeanIntensity:
    """A third-party metric: mean pixel value of the reconstructions, times ``scale``."""

    @attrs.frozen(kw_only=True)
    class Config:
        scale: float = 1.0

    def __init__(self, config, *, data_protocol=None, **_):
        self.config, self.protocol = config, dict(data_protocol or {})
        self.total, self.count = 0.0, 0

    def update(self, batch: EvalBatch) -> None:
        self.total += float(batch.fake.double().mean(dim=(1, 2, 3)).sum())
        self.count += batch.fake.shape[0]

    def merge(self, other: MeanIntensity) -> None:
        self.total, self.count = self.total + other.total, self.count + other.count

    def compute(self) -> dict:
        return {"mean_intensity": {"value": self.config.scale * self.total / self.count,
                                   "protocol": self.protocol}}


def test_metric_plugins_run_from_the_eval_config_and_typos_fail_at_load(tmp_path):
    from glotok_bench.config import structure
    from glotok_bench.errors import ConfigError
    from glotok_bench.hookspecs import hookimpl
    from glotok_bench.registry import Component, build_registry, using_registry

    class Plugin:
        @hookimpl
        def glotok_metrics(self):
            return [Component("mean-intensity", f"{__name__}:MeanIntensity")]

    with using_registry(build_registry(extra_plugins={"test-metrics": Plugin()})):
        options = structure(EvalOptions, {
            "extra_metrics": {"mean-intensity": {"scale": 2.0}},
            "fid": False, "inception_score": False, "lpips": False, "uniformity": False,
            "fig4": False, "sample_images": 0, "progress": False,
        })
        with pytest.raises(ConfigError, match=r"extra_metrics.*scal: unknown key\. Did you mean 'scale'"):
            structure(EvalOptions, {"extra_metrics": {"mean-intensity": {"scal": 2.0}}})
        with pytest.raises(ConfigError, match="unknown metric 'mean-intensty'"):
            structure(EvalOptions, {"extra_metrics": {"mean-intensty": {}}})
        data = PhotoCrops()
        result = run_evaluation(FakeTokenizer(), data, options, batch_size=16)
    tokenizer = FakeTokenizer()
    expected = 2.0 * float(torch.cat([tokenizer(data.images[i:i + 16]).reconstruction.double().mean(dim=(1, 2, 3))
                                      for i in range(0, len(data.images), 16)]).mean())
    assert result.metrics["mean_intensity"]["value"] == pytest.approx(expected, rel=1e-9)
    assert "psnr" in result.metrics


class DefaultMeanIntensity(MeanIntensity):
    """The same metric, declared to run in every evaluation."""

    runs_by_default = True

    def write_artifacts(self, out_dir):
        path = Path(out_dir) / "mean_intensity.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{self.total / self.count}\n")
        return {"mean_intensity_txt": str(path)}


def test_a_default_metric_plugin_runs_unnamed_writes_its_files_and_can_be_switched_off(tmp_path):
    from glotok_bench.config import structure
    from glotok_bench.hookspecs import hookimpl
    from glotok_bench.registry import Component, build_registry, using_registry

    class Plugin:
        @hookimpl
        def glotok_metrics(self):
            return [Component("mean-intensity-default", f"{__name__}:DefaultMeanIntensity")]

    quiet = {"fid": False, "inception_score": False, "lpips": False, "uniformity": False,
             "fig4": False, "sample_images": 0, "progress": False}
    with using_registry(build_registry(extra_plugins={"test-default-metric": Plugin()})):
        result = run_evaluation(FakeTokenizer(), PhotoCrops(), structure(EvalOptions, quiet), batch_size=16,
                                out_dir=tmp_path)
        off = structure(EvalOptions, {**quiet, "extra_metrics": {"mean-intensity-default": False}})
        without = run_evaluation(FakeTokenizer(), PhotoCrops(), off, batch_size=16)
    assert result.metrics["mean_intensity"]["value"] > -1
    assert Path(result.info["artifacts"]["mean_intensity_txt"]).is_file()
    assert "mean_intensity" not in without.metrics and "psnr" in without.metrics
