"""Samples -> images: generate with a trained generator, decode through the tokenizer, and
write a PNG grid plus the ADM-layout ``.npz`` that gFID/IS evaluation reads.

ADM protocol for ImageNet: 50 samples per class (50,000 images), stored as key
``arr_0``, uint8 [N, H, W, 3], pixel = round((x + 1) * 127.5) clipped to [0, 255].

Sampling may run under bf16 autocast; decoding never does: samples are decoded in fp32,
as rFID evaluation decodes, so gFID and rFID see the same decoder.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from glotok_bench.atomic import atomic_write_bytes
from glotok_bench.device import autocast, pick_device, resolve_precision
from glotok_bench.errors import ConfigError
from glotok_bench.generators.checkpoint import load_generator
from glotok_bench.generators.options import SamplingOptions, sampling_options
from glotok_bench.generators.sampling import make_generator

Samples = torch.Tensor | Mapping[str, torch.Tensor]


def adm_labels(num_classes: int, per_class: int = 50) -> torch.Tensor:
    """Labels [num_classes * per_class], class-major (0, 0, ..., 1, 1, ...), as the ADM protocol."""
    return torch.arange(num_classes).repeat_interleave(per_class)


def decode_samples(
    tokenizer: Any, samples: Samples, features: str = "with_residual"
) -> torch.Tensor:
    """Samples -> images [B, 3, H, W], in fp32 whatever autocast is active around the call.

    Index grids ``{branch: [B, h, w]}`` go through ``decode_indices`` (which adds the
    residual heads' Z_res); latents [B, C, h, w] through ``decode``, after
    ``add_residual`` when they are bare ``quantized`` codes (an xAR with
    ``features = "quantized"``), since the decoder was trained on Z_hat + Z_res.
    """
    if features not in ("with_residual", "quantized"):
        raise ConfigError(
            f"unknown latent features {features!r}; use 'with_residual' or 'quantized'"
        )
    some = next(iter(samples.values())) if isinstance(samples, Mapping) else samples
    with torch.autocast(some.device.type, enabled=False):
        if isinstance(samples, Mapping):
            return tokenizer.decode_indices(dict(samples)).float()
        latents = samples.float()
        if features == "quantized":
            latents = tokenizer.add_residual(latents)
        return tokenizer.decode(latents).float()


def sampled_features(model: nn.Module) -> str:
    """Which latents ``model.sample`` returns: its config's ``features`` (xAR), else the
    decoder's own input, ``with_residual``."""
    return str(getattr(getattr(model, "config", None), "features", "with_residual"))


def check_tokenizer(context: Mapping[str, Any], tokenizer: Any) -> None:
    """Refuse a tokenizer whose codebooks or channels differ from the generator's token data."""
    sizes = getattr(tokenizer, "codebook_sizes", None)
    if (
        sizes is not None
        and context.get("codebook_sizes")
        and dict(sizes) != dict(context["codebook_sizes"])
    ):
        raise ConfigError(
            f"the tokenizer's codebooks {dict(sizes)} differ from the generator's token data "
            f"{dict(context['codebook_sizes'])}; decode with the tokenizer that wrote the tokens"
        )
    channels = getattr(tokenizer, "latent_channels", None)
    if (
        channels is not None
        and context.get("channels")
        and int(channels) != int(context["channels"])
    ):
        raise ConfigError(
            f"the tokenizer has {channels} latent channels, the generator's data {context['channels']}"
        )


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images [B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3]: round((x + 1) * 127.5), clipped."""
    from glotok_bench.data.preprocess import to_uint8 as pixels

    return pixels(images).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def generate(
    checkpoint: str | Path | nn.Module,
    tokenizer: Any,
    labels: torch.Tensor,
    options: SamplingOptions | None = None,
    *,
    batch_size: int = 32,
    weights: Literal["ema", "model"] = "ema",
    device: str = "auto",
    precision: str = "auto",
    registry: Any = None,
    progress: bool = False,
    **changes: Any,
) -> np.ndarray:
    """Generate one image per label -> uint8 [N, H, W, 3] (ADM layout).

    ``checkpoint``: a generator checkpoint path, or a generator module. ``tokenizer``
    decodes the samples (see :func:`decode_samples`). ``options`` (``changes`` are
    applied to it, e.g. ``cfg_scale=2.0``) go to the generator's ``sample``; fields left
    unset take the generator's defaults. Batch ``b`` draws from a generator seeded with
    ``seed * 1_000_003 + b``, so the images depend on (seed, batch_size) and nothing else.
    """
    options = sampling_options(options, **changes)
    dev = pick_device(device)
    if isinstance(checkpoint, nn.Module):
        model, context = checkpoint.to(dev).eval(), None
    else:
        model, payload = load_generator(checkpoint, weights=weights, device=dev, registry=registry)
        context = payload["context"]
    if context is not None:
        check_tokenizer(context, tokenizer)
    features = sampled_features(model)
    labels = torch.as_tensor(labels, dtype=torch.long).flatten()
    bad = labels[(labels < 0) | (labels >= model.num_classes)]
    if bad.numel():
        raise ConfigError(f"labels must be in [0, {model.num_classes}); got {bad[:5].tolist()}")
    precision = resolve_precision(precision, dev)
    out: list[np.ndarray] = []
    from tqdm.auto import tqdm

    batches = range(0, labels.shape[0], batch_size)
    for index, start in enumerate(
        tqdm(batches, disable=not progress, desc="generate", unit="batch")
    ):
        part = labels[start : start + batch_size].to(dev)
        rng = make_generator(options.seed * 1_000_003 + index, dev)
        with autocast(dev, precision):
            samples = model.sample(part, options, generator=rng)
        images = decode_samples(tokenizer, samples, features)
        out.append(to_uint8(images.clamp(-1, 1)))
    return np.concatenate(out) if out else np.zeros((0, 0, 0, 3), np.uint8)


def image_grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """uint8 [N, H, W, 3] -> one uint8 image [rows * H, columns * W, 3] (blank cells stay black)."""
    count, height, width, _ = images.shape
    columns = columns or max(1, int(np.ceil(np.sqrt(count))))
    rows = max(1, int(np.ceil(count / columns)))
    grid = np.zeros((rows * height, columns * width, 3), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * height : (r + 1) * height, c * width : (c + 1) * width] = image
    return grid


def write_samples(
    images: np.ndarray,
    npz_path: str | Path,
    grid_path: str | Path | None = None,
    *,
    grid_count: int = 64,
    columns: int | None = None,
) -> dict[str, str]:
    """Write the ADM ``.npz`` (``arr_0``: uint8 [N, H, W, 3]) and a PNG grid of the first
    ``grid_count`` images, each atomically. Returns their paths."""
    from PIL import Image

    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"samples must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    buffer = io.BytesIO()
    np.savez(buffer, arr_0=images)
    written = {"npz": str(atomic_write_bytes(npz_path, buffer.getvalue()))}
    if grid_path is not None:
        png = io.BytesIO()
        Image.fromarray(image_grid(images[:grid_count], columns)).save(png, format="PNG")
        written["grid"] = str(atomic_write_bytes(grid_path, png.getvalue()))
    return written


def generate_to_dir(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    tokenizer: Any = None,
    tokenizer_checkpoint: str | Path | None = None,
    per_class: int = 50,
    num_classes: int | None = None,
    labels: torch.Tensor | None = None,
    options: SamplingOptions | None = None,
    batch_size: int = 32,
    weights: Literal["ema", "model"] = "ema",
    device: str = "auto",
    precision: str = "auto",
    registry: Any = None,
    progress: bool = False,
    **changes: Any,
) -> dict[str, Any]:
    """``generate CKPT``: sample ``per_class`` images for each class (or one per entry of
    ``labels``), write ``samples.npz`` and ``grid.png`` under ``out_dir``; returns their
    paths and the sampling protocol (the options resolved against the generator's
    defaults), for the run record the gFID/IS evaluation extends.

    The tokenizer is ``tokenizer`` if given, else loaded from ``tokenizer_checkpoint``,
    else from the path the token manifest recorded (whose sha256 must still match).
    """
    from glotok_bench.weights import file_sha256

    options = sampling_options(options, **changes)
    model, payload = load_generator(
        checkpoint, weights=weights, device=pick_device(device), registry=registry
    )
    provenance = payload.get("tokens") or {}
    if tokenizer is None:
        from glotok_bench.tokenizer.checkpoint import load_tokenizer

        path = tokenizer_checkpoint or provenance.get("tokenizer_checkpoint")
        if path is None:
            raise ConfigError(
                f"{checkpoint} does not record its tokenizer; pass tokenizer_checkpoint"
            )
        expected = provenance.get("tokenizer_sha256")
        if tokenizer_checkpoint is None and expected and file_sha256(path) != expected:
            raise ConfigError(
                f"the tokenizer at {path} changed since the tokens were written (sha256 differs)"
            )
        tokenizer, _ = load_tokenizer(path, device=pick_device(device), registry=registry)
    check_tokenizer(payload["context"], tokenizer)
    classes = num_classes or int(payload["context"]["num_classes"])
    chosen = adm_labels(classes, per_class) if labels is None else torch.as_tensor(labels)
    resolved = options.resolve(model.config)
    images = generate(
        model,
        tokenizer,
        chosen,
        resolved,
        batch_size=batch_size,
        device=device,
        precision=precision,
        progress=progress,
    )
    sampling = {**resolved.describe(), "batch_size": batch_size, "weights": weights}
    out_dir = Path(out_dir)
    written = write_samples(images, out_dir / "samples.npz", out_dir / "grid.png")
    protocol = {
        "generator": payload["generator"]["name"],
        "generator_checkpoint": str(Path(checkpoint).resolve()),
        "generator_sha256": file_sha256(checkpoint),
        "step": payload.get("step"),
        "tokenizer_sha256": provenance.get("tokenizer_sha256"),
        "dataset": provenance.get("dataset"),
        "num_samples": int(images.shape[0]),
        "per_class": per_class if labels is None else None,
        "num_classes": classes,
        "resolution": int(images.shape[1]) if images.size else None,
        "sampling": sampling,
    }
    return {**written, "protocol": protocol}
