"""Datasets in the ImageNet layout: ``root/<split>/<class>/<image>``.

Unreadable files do not stop a run: the dataset yields a marker for them, the collate
function drops it and reports the path with the batch, and the consumer counts them
into the run record (:class:`SkippedImages`). A dataset with no image at all is an error.
"""

from __future__ import annotations

import hashlib
import os
import random
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from PIL import Image, UnidentifiedImageError

from glotok_bench.data.preprocess import (
    PREPROCESSING_NAME,
    RESIZE_FILTER,
    center_crop_resize,
    to_tensor,
)
from glotok_bench.errors import DataError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@attrs.frozen
class FileList:
    """Relative image paths and integer labels, in a deterministic (sorted) order."""

    root: Path
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]

    def fingerprint(self) -> str:
        """Hash of the file names and sizes: cheap at ImageNet scale and changes when the
        set of images does. (The demo set also checks content hashes in its manifest.)"""
        digest = hashlib.sha256()
        for rel in self.paths:
            digest.update(rel.encode())
            digest.update(str((self.root / rel).stat().st_size).encode())
        return digest.hexdigest()


def scan_image_folder(root: Path) -> FileList:
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise DataError(f"{root} has no class folders (expected {root}/<class>/<image>)")
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = sorted(
            entry.name
            for entry in os.scandir(root / name)
            if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        paths.extend(f"{name}/{file}" for file in files)
        labels.extend([label] * len(files))
    if not paths:
        raise DataError(f"{root} has class folders but no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return FileList(root, tuple(paths), tuple(labels), tuple(classes))


class ImageFolderDataset(torch.utils.data.Dataset):
    """ImageNet-layout images, resized and centre-cropped to ``resolution``."""

    @attrs.frozen(kw_only=True)
    class Config:
        root: str = ""
        max_images: int | None = None
        horizontal_flip: bool = True  # training only; evaluation is never augmented
        seed: int = 0

    def __init__(self, config: Config, *, split: str, resolution: int, train: bool = False):
        if not config.root:
            raise DataError("imagefolder dataset needs data.dataset.root (a folder of <split>/<class>/<image>)")
        self.config = config
        self.split = split
        self.resolution = resolution
        self.train = train
        self.files = scan_image_folder(Path(config.root).expanduser() / split)
        count = len(self.files.paths)
        self.size = count if config.max_images is None else min(count, config.max_images)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, int, str]:
        rel = self.files.paths[index]
        try:
            with Image.open(self.files.root / rel) as image:
                image = center_crop_resize(image, self.resolution)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            return None, self.files.labels[index], index, f"{self.files.root / rel}: {exc}"
        if self.train and self.config.horizontal_flip and _flip_coin(self.config.seed, index):
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return to_tensor(image), self.files.labels[index], index, ""

    @property
    def num_classes(self) -> int:
        return len(self.files.classes)

    def protocol(self) -> dict[str, Any]:
        return {
            "dataset": "imagefolder",
            "root": str(self.files.root),
            "split": self.split,
            "count": self.size,
            "resolution": self.resolution,
            "crop": PREPROCESSING_NAME,
            "resize_filter": RESIZE_FILTER,
            "files_sha256": self.files.fingerprint(),
        }


def _flip_coin(seed: int, index: int) -> bool:
    # Tied to (seed, index) rather than global RNG so that a resumed run and a DataLoader
    # worker see the same flips as the uninterrupted main-process run.
    return random.Random(seed * 1_000_003 + index).random() < 0.5


def collate_images(samples: Sequence[tuple[torch.Tensor | None, int, int, str]]) -> dict[str, Any]:
    """Stack the readable samples; list the unreadable ones under ``"skipped"``."""
    good = [s for s in samples if s[0] is not None]
    skipped = [s[3] for s in samples if s[0] is None]
    if good:
        images = torch.stack([s[0] for s in good])
    else:
        images = torch.empty(0)
    return {
        "images": images,
        "labels": torch.tensor([s[1] for s in good], dtype=torch.long),
        "indices": torch.tensor([s[2] for s in good], dtype=torch.long),
        "skipped": skipped,
    }


@attrs.define
class SkippedImages:
    """Counts unreadable images seen by a run and warns once per file."""

    paths: list[str] = attrs.Factory(list)

    def add(self, batch: dict[str, Any]) -> None:
        for reason in batch["skipped"]:
            if reason not in self.paths:
                self.paths.append(reason)
                warnings.warn(f"skipping unreadable image {reason}", stacklevel=2)

    def as_record(self) -> dict[str, Any]:
        return {"count": len(self.paths), "files": list(self.paths)}
