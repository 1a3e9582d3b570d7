"""The resize + centre-crop the field uses for 256 px tokenizers (ADM / LlamaGen style).

Halve the image with a box filter while it is at least twice the target, then resize
the short side to the target with bicubic and crop the centre. Halving first avoids the
aliasing a single large bicubic downscale would add, which shifts FID.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

PREPROCESSING_NAME = "adm-center-crop"
RESIZE_FILTER = "box-halving+bicubic"


# Integer modes PIL's convert("RGB") clips to 0..255 instead of scaling (16-bit grayscale
# PNG/TIFF would turn almost white); their full range.
_WIDE_INTEGER_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, with 16-bit grayscale scaled to 8 bits rather than saturated."""
    full_range = _WIDE_INTEGER_MODES.get(image.mode)
    if full_range is None:
        return image.convert("RGB")
    # Mode "I" is how PIL opens 16-bit grayscale in some formats; it is treated as 16-bit.
    values = np.asarray(image, dtype=np.float64)
    gray = np.clip(np.rint(values * (255.0 / full_range)), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """8-bit RGB ``image`` with its short side resized to ``size`` (box halving, bicubic).

    Also the first half of training's random crops (:mod:`glotok_bench.train.augment`).
    """
    image = to_rgb(image)
    while min(image.size) >= 2 * size:
        image = image.resize((image.width // 2, image.height // 2), resample=Image.BOX)
    scale = size / min(image.size)
    return image.resize(
        (max(size, round(image.width * scale)), max(size, round(image.height * scale))),
        resample=Image.BICUBIC,
    )


def center_crop_resize(image: Image.Image, size: int) -> Image.Image:
    image = resize_short_side(image, size)
    left = (image.width - size) // 2
    top = (image.height - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> float tensor [3, H, W] in [-1, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> uint8 [0, 255], rounding the way PIL saving would."""
    return images.detach().float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
