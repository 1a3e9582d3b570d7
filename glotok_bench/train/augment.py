"""Training-image augmentation: LlamaGen's and FQGAN's random crop and flip, reproducibly.

The base code trains its tokenizers on ``random_crop_arr`` (LlamaGen
``dataset/augmentation.py``: the short side resized to a random size in 256..320 for
256 px, i.e. 1.0-1.25 x the resolution, then a crop at a random position) followed by
``RandomHorizontalFlip``, both drawn afresh every time an image is read. Here every draw
comes from a generator keyed on (seed, epoch, index), so a resumed run, a DataLoader
worker and each data-parallel rank see exactly the crops and flips an uninterrupted
single-process run would, while each epoch sees new ones.

Image-folder datasets are cropped from the file itself, so a crop can reach anywhere in
a non-square image as upstream's can; other map-style datasets (e.g. tensors in tests)
are cropped from the image they yield, resized with bicubic interpolation.
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from glotok_bench.data.preprocess import resize_short_side, to_tensor

CROP_FLIP = "crop-flip"

# What reading an image file can raise; such an image is skipped, as the dataset would.
_UNREADABLE = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)


def augmentation_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The generator of one image's draws in one epoch (str seeds hash the same in every
    process, unlike Python's salted ``hash``)."""
    return random.Random(f"glotok-augment/{seed}/{epoch}/{index}")


def _short_side(size: int, scale: tuple[float, float], rng: random.Random) -> int:
    # LlamaGen: randrange(ceil(size / max_crop_frac), ceil(size / min_crop_frac) + 1).
    return rng.randint(math.ceil(size * scale[0] - 1e-9), math.ceil(size * scale[1] - 1e-9))


def random_crop(image: Image.Image, size: int, scale: tuple[float, float], rng: random.Random) -> Image.Image:
    """A ``size`` x ``size`` crop of ``image`` after resizing its short side to a random
    ``scale`` multiple of ``size``, then a horizontal flip with probability 1/2."""
    image = resize_short_side(image, _short_side(size, scale, rng))
    left = rng.randrange(image.width - size + 1)
    top = rng.randrange(image.height - size + 1)
    image = image.crop((left, top, left + size, top + size))
    return image.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image


def random_crop_tensor(image: torch.Tensor, scale: tuple[float, float], rng: random.Random) -> torch.Tensor:
    """:func:`random_crop` for an image tensor [3, H, W] in [-1, 1]; the crop's side is
    the image's short side, so the output keeps the input's resolution when square."""
    height, width = image.shape[-2:]
    size = min(height, width)
    short = _short_side(size, scale, rng)
    factor = short / size
    resized_size = (max(short, round(height * factor)), max(short, round(width * factor)))
    if resized_size != (height, width):
        image = F.interpolate(
            image[None].float(), size=resized_size, mode="bicubic", align_corners=False, antialias=True
        )[0].clamp_(-1.0, 1.0)
    left = rng.randrange(resized_size[1] - size + 1)
    top = rng.randrange(resized_size[0] - size + 1)
    image = image[:, top : top + size, left : left + size]
    return image.flip(-1) if rng.random() < 0.5 else image


class AugmentedImages(torch.utils.data.Dataset):
    """``dataset`` read by ``(index, epoch)`` keys, each item randomly cropped and flipped.

    Items keep the dataset's form: glotok datasets' ``(image | None, label, index,
    problem)`` or ``(image, label, ...)`` tuples. An image-folder dataset (one with
    ``files`` and ``resolution``) is cropped from its files and its own fixed per-image
    flip is not applied (the fresh flip replaces it).
    """

    def __init__(self, dataset: Any, *, seed: int, scale: tuple[float, float]):
        lo, hi = scale
        if not 1.0 <= lo <= hi:
            raise ValueError(f"crop scale must satisfy 1 <= low <= high, got {scale!r}")
        self.dataset, self.seed, self.scale = dataset, seed, (float(lo), float(hi))
        self._from_files = hasattr(dataset, "files") and hasattr(dataset, "resolution")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, epoch = key
        rng = augmentation_rng(self.seed, epoch, index)
        if self._from_files:
            return self._from_file(index, rng)
        item = self.dataset[index]
        if isinstance(item, torch.Tensor):
            return random_crop_tensor(item, self.scale, rng)
        if item[0] is None:  # unreadable: passed on for the collate function to report
            return item
        return (random_crop_tensor(item[0], self.scale, rng), *item[1:])

    def _from_file(self, index: int, rng: random.Random) -> tuple[torch.Tensor | None, int, int, str]:
        files = self.dataset.files
        path = files.root / files.paths[index]
        try:
            with Image.open(path) as image:
                image = random_crop(image, self.dataset.resolution, self.scale, rng)
        except _UNREADABLE as exc:
            return None, files.labels[index], index, f"{path}: {exc}"
        return to_tensor(image), files.labels[index], index, ""
