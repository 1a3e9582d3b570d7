"""``patch-kmeans``: k-means of raw pixel patches: a teacher that needs no pretrained file.

Its relations are those of image patches, not of semantics, so it stands in for the
DINOv2/CLIP teachers only where no weights exist (the demo and CPU grids); its name
travels into every record and leaderboard row built with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import attrs
import torch
import torch.nn.functional as F

from glotok_bench.errors import ConfigError
from glotok_bench.teachers.backbones import Backbone
from glotok_bench.teachers.feature_kmeans import FeatureKMeansTeacher, _manifest_digest


class PixelPatches(Backbone):
    """``patch_features``: non-overlapping ``patch x patch`` RGB patches as vectors."""

    def __init__(self, image_size: int, patch: int):
        super().__init__(image_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        self.patch = patch

    def patch_features(self, images: torch.Tensor, layer: int = -1) -> torch.Tensor:
        pixels = self.prepare(images)
        grid = self.image_size // self.patch
        columns = F.unfold(pixels, kernel_size=self.patch, stride=self.patch)
        return columns.view(pixels.shape[0], -1, grid, grid)


class PatchKMeansTeacher(FeatureKMeansTeacher):
    source = "patch-kmeans"

    @attrs.frozen(kw_only=True)
    class Config:
        data_root: str = ""  # image folder root/<class>/<image>; the pipeline fills in the training data
        image_size: int = 32
        patch: int = 4
        pool_grid: int = 4  # patch grid average-pooled to pool_grid x pool_grid per image
        layer: int = -1  # unused: pixels have one "layer"; kept for the shared pipeline
        images_per_class: int = 0
        clustering: Literal["per-class", "global"] = "global"
        k: int = 256
        iterations: int = 30
        kmeans_batch_size: int = 0
        batch_size: int = 64
        seed: int = 0

    def spec(self, cache_dir: Path) -> dict[str, Any]:
        if not self.config.data_root:
            raise ConfigError("teacher 'patch-kmeans' needs `data_root`: an image folder root/<class>/<image>")
        options = attrs.asdict(self.config)
        for name in ("data_root", "batch_size", "layer"):
            options.pop(name)
        return {
            "source": self.source,
            **options,
            "encoder": "raw pixel patches (no pretrained weights)",
            "dataset_manifest": _manifest_digest(self._select_images()),
        }

    def _backbone(self, device: torch.device) -> Backbone:
        if self.config.image_size % self.config.patch:
            raise ConfigError(f"patch {self.config.patch} does not divide image_size {self.config.image_size}")
        return PixelPatches(self.config.image_size, self.config.patch).to(device)
