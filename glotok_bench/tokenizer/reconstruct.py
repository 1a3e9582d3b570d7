"""Reconstruct images with a trained tokenizer and write an original | reconstruction grid."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from glotok_bench.atomic import atomic_write_bytes
from glotok_bench.data.preprocess import to_uint8
from glotok_bench.errors import DataError
from glotok_bench.eval.pixel import psnr_per_image
from glotok_bench.registry import Registry
from glotok_bench.tokenizer.checkpoint import load_tokenizer

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(images: str | Path | Sequence[str | Path]) -> list[Path]:
    """Files and directories (each directory's image files, sorted) -> image paths."""
    entries = [images] if isinstance(images, str | Path) else list(images)
    paths: list[Path] = []
    for entry in map(Path, entries):
        if entry.is_dir():
            paths += sorted(p for p in entry.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            paths.append(entry)
    if not paths:
        raise DataError(f"no images found in {images}")
    return paths


def load_image(path: Path, resolution: int) -> torch.Tensor:
    """Image file -> [3, R, R] in [-1, 1]: shorter side resized to R (bicubic), centre crop."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import center_crop, pil_to_tensor, resize

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img = (
                resize(img, resolution, interpolation=Image.BICUBIC)
                if min(img.size) != resolution
                else img
            )
            tensor = pil_to_tensor(center_crop(img, resolution))
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc
    return tensor.float() / 127.5 - 1.0


@torch.no_grad()
def reconstruct_images(
    checkpoint: str | Path,
    images: str | Path | Sequence[str | Path],
    out_path: str | Path,
    *,
    device: str = "cpu",
    weights: Literal["ema", "model"] = "ema",
    pairs_per_row: int = 4,
    registry: Registry | None = None,
) -> dict[str, Any]:
    """Write a PNG grid of (original, reconstruction) pairs; returns paths and per-image PSNR.

    The checkpoint and every image are read before the PNG is (atomically) written.
    """
    from PIL import Image
    from torchvision.utils import make_grid

    tokenizer, _ = load_tokenizer(checkpoint, weights=weights, device=device, registry=registry)
    paths = list_images(images)
    batch = torch.stack([load_image(p, tokenizer.config.resolution) for p in paths]).to(device)
    reconstruction = torch.cat([tokenizer(chunk).reconstruction for chunk in batch.split(16)])
    original, rebuilt = to_uint8(batch).cpu(), to_uint8(reconstruction).cpu()
    pairs = torch.stack([original, rebuilt], dim=1).flatten(0, 1)  # o1, r1, o2, r2, ...
    grid = make_grid(pairs, nrow=2 * min(pairs_per_row, len(paths)), padding=2, pad_value=255)
    buffer = io.BytesIO()
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    out_path = atomic_write_bytes(out_path, buffer.getvalue())
    psnr = psnr_per_image(original, rebuilt)  # the evaluator's PSNR, so the two agree
    return {
        "grid": str(out_path),
        "images": [str(p) for p in paths],
        "psnr": psnr.tolist(),
        "mean_psnr": float(psnr.mean()),
    }
