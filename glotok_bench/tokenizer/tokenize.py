"""Dataset -> token shards for the generators (FAR uses indices, xAR the features).

Output directory layout::

    manifest.json               format, tokenizer checkpoint + sha256, dataset, resolution,
                                grid, codebook sizes, branch/channel order, count, views,
                                skipped (unreadable images), shards
    shard-00000.safetensors     indices.<branch> int32 [N, h, w], quantized fp16 [N, C, h, w],
                                with_residual fp16 [N, C, h, w], labels int64 [N]

With several views per image (``views``: "flip" stores each image and its mirror, as
xAR/MAR cache; "ten-crop" FQGAN's ten crops of a ``crop_range`` x centre crop) every
tensor but ``labels`` gets a view axis after N ([N, V, h, w], [N, V, C, h, w]) and the
generator's batch stream draws one view per image per epoch.

The folder appears whole or not at all: shards and manifest are written into a staging
folder beside ``out_dir`` that replaces it only once every image is encoded. Unreadable
images are skipped and counted (as training and evaluation do), never fatal unless none
is readable.

Importing this module does not import torch (run configs hold :class:`TokenizeConfig`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs

from glotok_bench.errors import DataError, GlotokError
from glotok_bench.validators import FieldValueError

if TYPE_CHECKING:
    import torch

    from glotok_bench.registry import Registry

VERSION = 1
ViewKind = Literal["none", "flip", "ten-crop"]
VIEW_COUNTS = {"none": 1, "flip": 2, "ten-crop": 10}


def _crop_range(_instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 1.0 <= value <= 2.0:  # also refuses NaN
        raise FieldValueError(attribute.name, f"must be in [1, 2], got {value!r}")


@attrs.frozen(kw_only=True)
class TokenizeConfig:
    """How ``tokenize`` writes a token set (the ``[tokens]`` section of a run config)."""

    # "none": the centre crop only. "flip": it and its mirror (xAR's cached latents).
    # "ten-crop": FQGAN's extract_codes_c2i --ten-crop: TenCrop(R) of a crop_range x R centre
    # crop. "auto": what the configured generator's base code trains on (its class's
    # ``token_views``: FAR ten-crop, xAR flip, others none).
    views: ViewKind | Literal["auto"] = "none"
    crop_range: float = attrs.field(default=1.1, validator=_crop_range)  # ten-crop only

    def for_generator(self, generator_class: type) -> TokenizeConfig:
        """These options with "auto" views replaced by ``generator_class.token_views``."""
        if self.views != "auto":
            return self
        return attrs.evolve(self, views=getattr(generator_class, "token_views", "none"))

    def input_resolution(self, resolution: int) -> int:
        """Side of the images the dataset must yield for a tokenizer of ``resolution``."""
        if self.views == "auto":
            raise GlotokError("tokens.views = 'auto' must be resolved against the generator first")
        return int(resolution * self.crop_range) if self.views == "ten-crop" else resolution


def _shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def make_views(images: torch.Tensor, views: ViewKind, resolution: int) -> torch.Tensor:
    """Images [B, 3, S, S] -> [B, V, 3, R, R] (R = ``resolution``).

    "flip": (image, mirror). "ten-crop": torchvision's TenCrop order: the four corners and
    the centre, then the same five of the mirrored image.
    """
    import torch

    if views == "none":
        return images[:, None]
    if views == "flip":
        return torch.stack([images, images.flip(-1)], dim=1)
    side, r = images.shape[-1], resolution
    centre = int(round((side - r) / 2.0))  # torchvision's center_crop rounding
    offsets = [(0, 0), (0, side - r), (side - r, 0), (side - r, side - r), (centre, centre)]
    crops = [
        source[..., y : y + r, x : x + r] for source in (images, images.flip(-1)) for y, x in offsets
    ]
    return torch.stack(crops, dim=1)


class _Items:
    """A map-style dataset's items as (image or None, label, index, why unreadable):
    glotok's datasets already yield that; plain (image, label) pairs are always readable."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int, int, str]:
        item = self.dataset[index]
        if len(item) >= 4:
            return item[0], int(item[1]), int(item[2]), str(item[3])
        return item[0], int(item[1]) if len(item) > 1 else -1, index, ""


def _batches(dataset: Any, batch_size: int, num_workers: int, skipped: Any):
    """(images, labels) batches; unreadable images are recorded in ``skipped``."""
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        from glotok_bench.data.loaders import make_loader, readable_batches

        loader = make_loader(_Items(dataset), batch_size=batch_size, num_workers=num_workers)
        for batch in readable_batches(loader, skipped):
            yield batch["images"], batch["labels"]
    else:
        for batch in dataset:  # already batched
            yield (batch[0], batch[1]) if isinstance(batch, list | tuple) else (batch, None)


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
    options: TokenizeConfig | None = None,
    loaded: tuple[Any, dict[str, Any]] | None = None,
) -> Path:
    """Encode every image of ``dataset`` ((image [3, S, S] in [-1, 1], label[, index,
    reason]) items, or an iterable of (images, labels) batches) and write shards +
    manifest; returns the manifest path. S is the tokenizer's resolution, or
    ``options.input_resolution`` of it for ten crops.

    The checkpoint is loaded and checked before anything is written; an existing token
    directory is refused unless ``overwrite``, and stays untouched if this call fails.
    ``loaded``: what ``load_tokenizer(checkpoint, weights=weights)`` returned, when the caller
    has read the file already (a peer's is 0.3-1 GB).
    """
    import torch

    from glotok_bench.atomic import atomic_write_bytes, atomic_write_json
    from glotok_bench.data.imagefolder import SkippedImages
    from glotok_bench.generators.tokens import FORMAT
    from glotok_bench.tokenizer.checkpoint import load_tokenizer
    from glotok_bench.weights import file_sha256

    options = options or TokenizeConfig()
    if options.views not in VIEW_COUNTS:
        raise GlotokError(f"tokenize needs concrete views, got {options.views!r}")
    checkpoint = Path(checkpoint)
    out_dir = Path(out_dir)
    if loaded is None:
        loaded = load_tokenizer(checkpoint, weights=weights, device=device, registry=registry)
    tokenizer, payload = loaded[0].to(device), loaded[1]
    manifest_path = out_dir / "manifest.json"
    if manifest_path.exists() and not overwrite:
        raise GlotokError(f"{out_dir} already holds tokens; pass overwrite to replace them")
    if shard_size <= 0 or batch_size <= 0:
        raise GlotokError("shard_size and batch_size must be positive")
    resolution = tokenizer.config.resolution
    side = options.input_resolution(resolution)
    view_count = VIEW_COUNTS[options.views]
    protocol = dataset.protocol() if hasattr(dataset, "protocol") else None
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "tokenizer_checkpoint": str(checkpoint.resolve()),
        "tokenizer_sha256": payload.get("sha256") or file_sha256(checkpoint),  # peers hash at load
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
        "views": view_count,
        "view_kind": options.views,
        "crop_range": options.crop_range if options.views == "ten-crop" else None,
        "count": 0,
        "shards": [],
    }
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    buffer: dict[str, list[torch.Tensor]] = {}
    buffered = 0

    def write_shard() -> None:
        nonlocal buffer, buffered
        from safetensors.torch import save

        tensors = {key: torch.cat(parts).contiguous() for key, parts in buffer.items()}
        name = _shard_name(len(manifest["shards"]))
        atomic_write_bytes(staging / name, save(tensors, metadata={"format": FORMAT}))
        manifest["shards"].append({"file": name, "count": buffered})
        manifest["count"] += buffered
        buffer, buffered = {}, 0

    def squeeze(t: torch.Tensor) -> torch.Tensor:
        """[n, V, ...] -> [n, ...] when there is one view (the single-view layout)."""
        return t[:, 0] if view_count == 1 else t

    shutil.rmtree(staging, ignore_errors=True)  # left by a killed run
    staging.mkdir(parents=True)
    skipped = SkippedImages()
    try:
        with torch.no_grad():
            for images, labels in _batches(dataset, batch_size, num_workers, skipped):
                if images.ndim != 4 or tuple(images.shape[1:]) != (3, side, side):
                    raise DataError(
                        f"images must be [B, 3, {side}, {side}] for this tokenizer"
                        f"{' and ten crops' if side != resolution else ''}, got {tuple(images.shape)}"
                    )
                count = images.shape[0]
                if labels is None:
                    labels = torch.full((count,), -1, dtype=torch.long)
                views = make_views(images.to(device), options.views, resolution)
                encoding = tokenizer.encode(views.flatten(0, 1))
                # [count * V, ...] -> [count, V, ...] (-> [count, ...] for one view), stored dtypes.
                stored = {f"indices.{b}": (i, torch.int32) for b, i in encoding.indices.items()}
                stored["quantized"] = (encoding.quantized, torch.float16)
                stored["with_residual"] = (encoding.with_residual, torch.float16)
                per_image = {
                    key: (squeeze(t.unflatten(0, (count, view_count))), dtype)
                    for key, (t, dtype) in stored.items()
                }
                # Split a batch across shard boundaries so every shard holds exactly shard_size.
                start = 0
                while start < count:
                    take = min(shard_size - buffered, count - start)
                    part = slice(start, start + take)
                    for key, (tensor, dtype) in per_image.items():
                        buffer.setdefault(key, []).append(tensor[part].to("cpu", dtype))
                    buffer.setdefault("labels", []).append(
                        torch.as_tensor(labels)[part].to(torch.int64)
                    )
                    buffered += take
                    start += take
                    if buffered == shard_size:
                        write_shard()
        if buffered:
            write_shard()
        if manifest["count"] == 0:
            raise DataError("the dataset yielded no image to tokenize")
        manifest["skipped"] = skipped.as_record()
        manifest["complete"] = True
        atomic_write_json(staging / "manifest.json", manifest)
        _replace_folder(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest_path


def _replace_folder(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target``, removing an older ``target`` only once ``new`` is there."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of a finished token directory (see :func:`glotok_bench.generators.tokens.read_manifest`)."""
    from glotok_bench.generators.tokens import read_manifest as read

    return read(out_dir)
