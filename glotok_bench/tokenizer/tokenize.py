"""Dataset -> token shards for the generators (FAR uses indices, xAR the features).

Output directory layout::

    manifest.json               format, tokenizer checkpoint + sha256, dataset, resolution,
                                grid, codebook sizes, branch/channel order, count, shards
    shard-00000.safetensors     indices.<branch> int32 [N, h, w], quantized fp16 [N, C, h, w],
                                with_residual fp16 [N, C, h, w], labels int64 [N]

Each shard is written atomically and the manifest is rewritten after every shard
("complete": false until the last), so a killed run leaves only whole shards behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from glotok_bench.atomic import atomic_write_bytes, atomic_write_json
from glotok_bench.errors import DataError, GlotokError
from glotok_bench.registry import Registry
from glotok_bench.tokenizer.checkpoint import load_tokenizer
from glotok_bench.weights import file_sha256

FORMAT = "glotok-bench/tokens"
VERSION = 1


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def _batches(dataset: Any, batch_size: int, num_workers: int):
    from torch.utils.data import DataLoader

    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        yield from DataLoader(
            dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers
        )
    else:
        yield from dataset  # already batched


@torch.no_grad()
def tokenize_dataset(
    checkpoint: str | Path,
    dataset: Any,
    out_dir: str | Path,
    *,
    batch_size: int = 64,
    shard_size: int = 10_000,
    device: str = "cpu",
    weights: Literal["ema", "model"] = "ema",
    dataset_name: str | None = None,
    overwrite: bool = False,
    num_workers: int = 0,
    registry: Registry | None = None,
) -> Path:
    """Encode every image of ``dataset`` ((image [3,R,R] in [-1,1], label) items, or an
    iterable of (images, labels) batches) and write shards + manifest; returns the manifest path.

    The checkpoint is loaded and checked before anything is written; an existing token
    directory is refused unless ``overwrite``.
    """
    checkpoint = Path(checkpoint)
    out_dir = Path(out_dir)
    tokenizer, _payload = load_tokenizer(
        checkpoint, weights=weights, device=device, registry=registry
    )
    manifest_path = out_dir / "manifest.json"
    if manifest_path.exists() and not overwrite:
        raise GlotokError(f"{out_dir} already holds tokens; pass overwrite to replace them")
    if shard_size <= 0 or batch_size <= 0:
        raise GlotokError("shard_size and batch_size must be positive")
    resolution = tokenizer.config.resolution
    protocol = dataset.protocol() if hasattr(dataset, "protocol") else None
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "tokenizer_checkpoint": str(checkpoint.resolve()),
        "tokenizer_sha256": file_sha256(checkpoint),
        "weights": weights,
        "dataset": dataset_name or (protocol or {}).get("name") or type(dataset).__name__,
        "dataset_protocol": protocol,
        "resolution": resolution,
        "grid": [tokenizer.grid_size, tokenizer.grid_size],
        "codebook_sizes": tokenizer.codebook_sizes,
        "branches": list(tokenizer.codebook_sizes),
        "channels": tokenizer.latent_channels,
        # The dataset's own class count: largest-label-plus-one undercounts missing classes.
        "num_classes": getattr(dataset, "num_classes", None),
        "channel_order": "cat([" + ", ".join(tokenizer.codebook_sizes) + "]) along channels",
        "count": 0,
        "shards": [],
        "complete": False,
    }
    buffer: dict[str, list[torch.Tensor]] = {}
    buffered = 0

    def write_shard() -> None:
        nonlocal buffer, buffered
        from safetensors.torch import save

        tensors = {key: torch.cat(parts).contiguous() for key, parts in buffer.items()}
        name = _shard_name(len(manifest["shards"]))
        atomic_write_bytes(out_dir / name, save(tensors, metadata={"format": FORMAT}))
        manifest["shards"].append({"file": name, "count": buffered})
        manifest["count"] += buffered
        atomic_write_json(manifest_path, manifest)
        buffer, buffered = {}, 0

    out_dir.mkdir(parents=True, exist_ok=True)
    for batch in _batches(dataset, batch_size, num_workers):
        images, labels = (batch[0], batch[1]) if isinstance(batch, list | tuple) else (batch, None)
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, resolution, resolution):
            raise DataError(
                f"images must be [B, 3, {resolution}, {resolution}] for this tokenizer, got {tuple(images.shape)}"
            )
        if labels is None:
            labels = torch.full((images.shape[0],), -1, dtype=torch.long)
        encoding = tokenizer.encode(images.to(device))
        # Split a batch across shard boundaries so every shard holds exactly shard_size.
        start = 0
        while start < images.shape[0]:
            take = min(shard_size - buffered, images.shape[0] - start)
            part = slice(start, start + take)
            for branch, idx in encoding.indices.items():
                buffer.setdefault(f"indices.{branch}", []).append(idx[part].to("cpu", torch.int32))
            buffer.setdefault("quantized", []).append(
                encoding.quantized[part].to("cpu", torch.float16)
            )
            buffer.setdefault("with_residual", []).append(
                encoding.with_residual[part].to("cpu", torch.float16)
            )
            buffer.setdefault("labels", []).append(torch.as_tensor(labels)[part].to(torch.int64))
            buffered += take
            start += take
            if buffered == shard_size:
                write_shard()
    if buffered:
        write_shard()
    if manifest["count"] == 0:
        raise DataError("the dataset yielded no image to tokenize")
    # Shards left over from an overwritten, longer token set would confuse readers.
    keep = {shard["file"] for shard in manifest["shards"]}
    for stale in out_dir.glob("shard-*.safetensors"):
        if stale.name not in keep:
            stale.unlink()
    manifest["complete"] = True
    atomic_write_json(manifest_path, manifest)
    return manifest_path


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of a token directory (raises if it is missing or incomplete)."""
    import json

    path = Path(out_dir) / "manifest.json"
    if not path.is_file():
        raise DataError(f"{out_dir} has no manifest.json; is it a token directory?")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT or not manifest.get("complete"):
        raise DataError(f"{path} is not a complete glotok-bench token manifest")
    return manifest
