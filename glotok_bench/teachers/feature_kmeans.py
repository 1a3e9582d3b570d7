"""Teachers made by clustering a pretrained encoder's patch features over a dataset.

Following VQGAN-LC's codebook recipe where the GloTok paper is silent: 224 px centre
crops, the encoder's last-layer patch tokens (CLIP: after ``ln_post`` and the image
projection), the 16 x 16 patch grid average-pooled to 4 x 4 (16 vectors per image),
Euclidean k-means from random samples, run per class with the centres split evenly
across classes and concatenated (VQGAN-LC: 100 per class x 1000 classes). ``global``
clustering instead runs one (mini-batch) k-means over all classes' vectors.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any, Literal

import attrs
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from glotok_bench.data.imagefolder import FileList, scan_image_folder
from glotok_bench.data.preprocess import center_crop_resize, to_tensor
from glotok_bench.errors import ConfigError, DataError
from glotok_bench.teachers.backbones import Backbone, load_backbone
from glotok_bench.teachers.base import CachedTeacher
from glotok_bench.teachers.cache import file_digest, spec_digest
from glotok_bench.teachers.kmeans import kmeans

# Config fields that only affect speed, not the codebook, stay out of the cache key.
_SPEED_ONLY_FIELDS = ("batch_size",)


class FeatureKMeansTeacher(CachedTeacher):
    """Shared pipeline; subclasses fix the encoder family and its defaults."""

    clusters_images = True

    @classmethod
    def _label_options(cls, config: Any) -> list[str]:
        changed = super()._label_options(config)
        # A random encoder gives relations without meaning: say so loudly in the row label.
        if getattr(config, "allow_random_init", False) and not getattr(config, "weights_path", ""):
            changed = [c for c in changed if not c.startswith("allow_random_init=")] + ["RANDOM-INIT encoder"]
        return changed

    def spec(self, cache_dir: Path) -> dict[str, Any]:
        config = self.config
        if not config.data_root:
            raise ConfigError(
                f"teacher {self.source!r} needs `data_root`: an image folder root/<class>/<image>"
            )
        selection = self._select_images()
        options = attrs.asdict(config)
        for name in ("data_root", "weights_path", *_SPEED_ONLY_FIELDS):
            options.pop(name)
        weights = (
            file_digest(config.weights_path, cache_dir) if config.weights_path else "random-init"
        )
        return {
            "source": self.source,
            **options,
            "weights_sha256": weights,
            "dataset_manifest": _manifest_digest(selection),
        }

    def compute(self, device: torch.device) -> torch.Tensor:
        config = self.config
        backbone = self._backbone(device)
        selection = self._select_images()
        if config.clustering == "global":
            features = torch.cat([self._features(backbone, files) for files in selection.values()])
            return kmeans(
                features,
                config.k,
                iterations=config.iterations,
                batch_size=config.kmeans_batch_size,
                seed=config.seed,
                device=device,
            )
        centres = []
        for index, (name, files) in enumerate(selection.items()):
            share = config.k // len(selection) + (index < config.k % len(selection))
            if share == 0:
                continue
            features = self._features(backbone, files)
            if features.shape[0] < share:
                raise ConfigError(
                    f"class {name!r} yields {features.shape[0]} feature vectors, fewer than its "
                    f"{share} centres; lower k, raise images_per_class or use clustering = 'global'"
                )
            centres.append(
                kmeans(
                    features,
                    share,
                    iterations=config.iterations,
                    batch_size=config.kmeans_batch_size,
                    seed=config.seed + index,
                    device=device,
                )
            )
        return torch.cat(centres)

    def _backbone(self, device: torch.device) -> Backbone:
        raise NotImplementedError

    def _select_images(self) -> dict[str, list[Path]]:
        """Class name -> image files: all, or a seeded sample of ``images_per_class``."""
        root = Path(self.config.data_root).expanduser()
        listing: FileList = scan_image_folder(root)
        by_class: dict[str, list[Path]] = {name: [] for name in listing.classes}
        for rel, label in zip(listing.paths, listing.labels, strict=True):
            by_class[listing.classes[label]].append(root / rel)
        per_class = self.config.images_per_class
        if per_class > 0:
            rng = random.Random(self.config.seed)
            by_class = {
                name: sorted(rng.sample(files, min(per_class, len(files))))
                for name, files in by_class.items()
            }
        return by_class

    @torch.no_grad()
    def _features(self, backbone: Backbone, files: list[Path]) -> torch.Tensor:
        """Pooled patch features of ``files``: ``[images * pool_grid^2, D]`` on the CPU."""
        config = self.config
        pooled = []
        for start in range(0, len(files), config.batch_size):
            images = [
                _load(path, backbone.image_size)
                for path in files[start : start + config.batch_size]
            ]
            images = [image for image in images if image is not None]
            if not images:
                continue
            batch = torch.stack(images).to(backbone.mean.device)
            grid = backbone.patch_features(batch, config.layer)
            grid = F.adaptive_avg_pool2d(grid.float(), config.pool_grid)
            pooled.append(grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[1]).cpu())
        if not pooled:
            raise DataError(f"no readable image among {len(files)} files, e.g. {files[0]}")
        return torch.cat(pooled)


class DinoV2KMeansTeacher(FeatureKMeansTeacher):
    """``dinov2-kmeans``: k-means of DINOv2 (timm) patch features over an image folder."""

    source = "dinov2-kmeans"

    @attrs.frozen(kw_only=True)
    class Config:
        data_root: str = ""  # image folder: root/<class>/<image>
        weights_path: str = ""  # DINOv2 weights: original release .pth or timm .safetensors
        model: str = "vit_base_patch14_dinov2"  # timm model name
        layer: int = -1  # transformer block whose patch tokens are used; < 0 counts from the end
        final_norm: bool = True  # apply the encoder's final LayerNorm to those tokens
        image_size: int = 224
        pool_grid: int = 4  # patch grid average-pooled to pool_grid x pool_grid per image
        images_per_class: int = 0  # 0: every image
        clustering: Literal["per-class", "global"] = "per-class"
        k: int = 16384
        iterations: int = 50
        kmeans_batch_size: int = 0  # 0: full-batch Lloyd; > 0: mini-batch k-means
        batch_size: int = 32  # images per encoder forward (speed only)
        seed: int = 0
        allow_random_init: bool = False  # no weights file: random encoder (timing only)

    def _backbone(self, device: torch.device) -> Backbone:
        config = self.config
        return load_backbone(
            "dinov2",
            config.model,
            config.weights_path,
            image_size=config.image_size,
            final_norm=config.final_norm,
            allow_random_init=config.allow_random_init,
            device=device,
        )


class ClipKMeansTeacher(FeatureKMeansTeacher):
    """``clip-kmeans``: k-means of CLIP (open_clip) patch features, VQGAN-LC's source."""

    source = "clip-kmeans"

    @attrs.frozen(kw_only=True)
    class Config:
        data_root: str = ""  # image folder: root/<class>/<image>
        weights_path: str = ""  # open_clip / OpenAI CLIP state dict (.safetensors or .pt dict)
        model: str = "ViT-L-14"  # open_clip model name; input size is the model's own
        quick_gelu: bool = True  # OpenAI's weights were trained with QuickGELU
        layer: int = -1
        final_norm: bool = True  # ln_post on the patch tokens
        project: bool = True  # then the image projection (VQGAN-LC's 768-d features)
        pool_grid: int = 4
        images_per_class: int = 0
        clustering: Literal["per-class", "global"] = "per-class"
        k: int = 16384
        iterations: int = 50
        kmeans_batch_size: int = 0
        batch_size: int = 32
        seed: int = 0
        allow_random_init: bool = False

    def _backbone(self, device: torch.device) -> Backbone:
        config = self.config
        return load_backbone(
            "clip",
            config.model,
            config.weights_path,
            final_norm=config.final_norm,
            project=config.project,
            quick_gelu=config.quick_gelu,
            allow_random_init=config.allow_random_init,
            device=device,
        )


def _manifest_digest(selection: dict[str, list[Path]]) -> str:
    """Digest of the selected files' class, name and size."""
    entries = [
        [name, path.name, path.stat().st_size]
        for name, files in sorted(selection.items())
        for path in files
    ]
    return spec_digest({"files": entries})


def _load(path: Path, size: int) -> torch.Tensor | None:
    try:
        with Image.open(path) as image:
            return to_tensor(center_crop_resize(image, size))
    except (OSError, UnidentifiedImageError) as exc:
        warnings.warn(f"skipping unreadable image {path}: {exc}", stacklevel=2)
        return None
