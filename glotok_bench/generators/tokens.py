"""Reader for token directories (written by ``tokenize``) and the batches generators train on.

Layout read here::

    manifest.json             format "glotok-bench/tokens", codebook_sizes {branch: size},
                              shards [{"file", "count"}], count, views, tokenizer_sha256,
                              dataset, resolution (grid, channels optional)
    shard-00000.safetensors   indices.<branch> int32 [N, h, w]; quantized, with_residual fp16
                              [N, C, h, w] (semantic channels first, then visual); labels int64 [N]

A token set written with several views per image (``views`` V > 1 in the manifest:
flips, or FQGAN's ten crops) stores every tensor but ``labels`` with a view axis after
N: [N, V, h, w] and [N, V, C, h, w].

Only the keys a generator asks for are loaded (FAR: the index grids, xAR: one feature
set), and they stay in their compact stored dtypes until a batch is cut. Memory for
ImageNet (1.28M images, 16x16 grid): two index grids about 2.6 GB, one fp16 feature set
(C = 16) about 10.5 GB; V views take V times that.

Batches depend only on (seed, step): the stream is a new permutation of the data every
epoch, and with views each image's view for that epoch is drawn from (seed, epoch,
index), so a resumed run sees exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from glotok_bench.batch_order import BatchOrder
from glotok_bench.errors import ConfigError, DataError

FORMAT = "glotok-bench/tokens"
FEATURE_KEYS = ("quantized", "with_residual")


def read_manifest(root: str | Path, *, complete: bool = True) -> dict[str, Any]:
    """The checked manifest of token directory ``root``: present, JSON, of this format and
    (unless ``complete`` is False) finished; raises :class:`DataError` naming the file."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise DataError(
            f"{root} has no manifest.json; is it a token directory written by `tokenize`?"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise DataError(f"{path} is not a {FORMAT} manifest (format {found!r})")
    if complete and manifest.get("complete") is False:
        raise DataError(f"{path}: tokenization did not finish (complete = false); rerun `tokenize`")
    for key in ("codebook_sizes", "shards"):
        if key not in manifest:
            raise DataError(f"{path} lacks {key!r}; is it a glotok-bench token manifest?")
    views = manifest.get("views", 1)
    if not isinstance(views, int) or views < 1:
        raise DataError(f"{path}: views must be a positive integer, got {views!r}")
    return manifest


def item_dims(key: str) -> int | None:
    """Dimensions of one image's (one view's) entry under ``key``: index grids [h, w] 2,
    features [C, h, w] 3; None for keys without a view axis (labels, unknown)."""
    if key.startswith("indices."):
        return 2
    return 3 if key in FEATURE_KEYS else None


@attrs.frozen
class TokenContext:
    """What the token data fixes for a generator; passed as ``Generator(config, **context.kwargs())``."""

    codebook_sizes: dict[str, int]
    grid_size: tuple[int, int]
    channels: int
    num_classes: int

    def kwargs(self) -> dict[str, Any]:
        return {
            "codebook_sizes": dict(self.codebook_sizes),
            "grid_size": tuple(self.grid_size),
            "channels": self.channels,
            "num_classes": self.num_classes,
        }


def check_grid(grid_size: int | Sequence[int]) -> tuple[int, int]:
    """An int or (h, w) -> (h, w), refusing empty grids."""
    grid = (
        (grid_size, grid_size) if isinstance(grid_size, int) else tuple(int(g) for g in grid_size)
    )
    if len(grid) != 2 or min(grid) <= 0:
        raise ConfigError(f"grid_size must be a positive int or (h, w), got {grid_size!r}")
    return grid  # type: ignore[return-value]


class TokenSet:
    """A token directory: its manifest, and loading of chosen keys across all shards."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / "manifest.json"
        self.manifest: dict[str, Any] = read_manifest(self.root)
        self.views = int(self.manifest.get("views", 1))
        self.shards = [
            self.root / (s["file"] if isinstance(s, Mapping) else s)
            for s in self.manifest["shards"]
        ]
        if not self.shards:
            raise DataError(f"{path} lists no shards")
        missing = [s.name for s in self.shards if not s.is_file()]
        if missing:
            raise DataError(
                f"{self.root}: shard files listed in the manifest are missing: {missing[:5]}"
            )
        self.codebook_sizes = {str(k): int(v) for k, v in self.manifest["codebook_sizes"].items()}

    def keys(self) -> list[str]:
        """The tensor names every shard holds (read from the first shard's header)."""
        from safetensors import safe_open

        with safe_open(str(self.shards[0]), framework="pt") as handle:
            return sorted(handle.keys())

    def load(self, keys: Iterable[str]) -> dict[str, torch.Tensor]:
        """{key: tensor over all shards} for ``keys`` plus ``labels``, checked for shape and dtype."""
        from safetensors import SafetensorError, safe_open

        wanted = list(dict.fromkeys(["labels", *keys]))
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in wanted}
        for shard in self.shards:
            try:
                with safe_open(str(shard), framework="pt") as handle:
                    present = set(handle.keys())
                    absent = [k for k in wanted if k not in present]
                    if absent:
                        raise DataError(
                            f"{shard} has no {absent}; it holds {sorted(present)}. "
                            "Was it written by a tokenizer with other branches?"
                        )
                    for key in wanted:
                        parts[key].append(handle.get_tensor(key))
            except SafetensorError as exc:
                raise DataError(f"{shard} is not a readable safetensors file: {exc}") from None
        tensors = {k: torch.cat(v) for k, v in parts.items()}
        self._check(tensors)
        return tensors

    def _check(self, tensors: Mapping[str, torch.Tensor]) -> None:
        count = tensors["labels"].shape[0]
        declared = self.manifest.get("count")
        if declared is not None and int(declared) != count:
            raise DataError(
                f"{self.root}: manifest count {declared} but the shards hold {count} items"
            )
        if tensors["labels"].ndim != 1:
            raise DataError(
                f"{self.root}: labels must be [N], got {tuple(tensors['labels'].shape)}"
            )
        views = [self.views] if self.views > 1 else []
        for key, tensor in tensors.items():
            if tensor.shape[0] != count:
                raise DataError(f"{self.root}: {key} has {tensor.shape[0]} items, labels {count}")
            dims = item_dims(key)
            layout = ["N", *(["V"] if views else []), *(["h", "w"] if dims == 2 else ["C", "h", "w"])]
            if dims is not None and (
                tensor.ndim != 1 + len(views) + dims
                or list(tensor.shape[1 : 1 + len(views)]) != views
                or tensor.dtype.is_floating_point != (dims == 3)
            ):
                kind = "integer" if dims == 2 else "float"
                raise DataError(
                    f"{self.root}: {key} must be {kind} [{', '.join(layout)}]"
                    f"{f' with V = {self.views}' if views else ''}, "
                    f"got {tensor.dtype} {tuple(tensor.shape)}"
                )
            if key.startswith("indices."):
                branch = key.split(".", 1)[1]
                size = self.codebook_sizes.get(branch)
                if size is None:
                    raise DataError(f"{self.root}: {key} has no codebook size in the manifest")
                if tensor.numel() and (int(tensor.min()) < 0 or int(tensor.max()) >= size):
                    raise DataError(f"{self.root}: {key} holds indices outside [0, {size})")
        if count and int(tensors["labels"].min()) < 0:
            raise DataError(
                f"{self.root}: some labels are negative (unlabelled images); class-conditional "
                "generators need every image labelled"
            )

    def shapes(self) -> dict[str, list[int]]:
        """{key: shape} of the first shard's tensors, read from its header (no data loaded)."""
        from safetensors import safe_open

        with safe_open(str(self.shards[0]), framework="pt") as handle:
            return {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}

    def labels(self) -> torch.Tensor:
        """Class labels [N] over all shards."""
        return self.load([])["labels"]

    def context(self, num_classes: int | None = None) -> TokenContext:
        """Vocabulary sizes, grid, channels and class count of this token set.

        Grid and channels come from the manifest, else from the shard header. Class
        count: ``num_classes`` if given, else the manifest's (or its dataset protocol's),
        else the largest label + 1, which undercounts when the highest classes are absent
        from the data: pass it explicitly for ImageNet (1000).
        """
        shapes = self.shapes()
        grid = self.manifest.get("grid")
        channels = self.manifest.get("channels")
        skip = 2 if self.views > 1 else 1  # N, and the view axis
        for key, shape in shapes.items():
            dims = item_dims(key)
            if dims is None or len(shape) != skip + dims:
                continue
            grid = grid or shape[-2:]
            if dims == 3:
                channels = channels or shape[skip]
        if grid is None:
            raise DataError(
                f"{self.root}: cannot tell the token grid size (no 'grid' in the manifest, no index grids)"
            )
        protocol = self.manifest.get("dataset_protocol") or {}
        labels = self.labels()
        inferred = int(labels.max()) + 1 if labels.numel() else 1
        classes = (
            num_classes
            or self.manifest.get("num_classes")
            or protocol.get("num_classes")
            or inferred
        )
        if inferred > classes:
            raise DataError(
                f"{self.root}: labels go up to {inferred - 1} but num_classes is {classes}"
            )
        return TokenContext(
            dict(self.codebook_sizes), check_grid(grid), int(channels or 0), int(classes)
        )

    def describe(self) -> dict[str, Any]:
        """Provenance for run records and checkpoints."""
        keep = (
            "tokenizer_checkpoint",
            "tokenizer_sha256",
            "dataset",
            "resolution",
            "count",
            "weights",
            "views",
            "view_kind",
        )
        return {"root": str(self.root.resolve()), **{k: self.manifest.get(k) for k in keep}}


class BatchStream:
    """Global batch ``step`` -> this rank's slice of it, as a dict of training tensors.

    Which items: :class:`glotok_bench.batch_order.BatchOrder`, the one ordering every
    trainer shares (item perm_e[p mod N] at position p, e = p // N, perm_e seeded by
    (seed, e); rank r of W takes the r-th part of each global batch). Indices come out
    int64, features fp32.

    Tensors with a view axis ([N, V, ...], see the module docstring) give item i its
    view view_e[i] in epoch e, drawn right after perm_e from the same (seed, e) stream:
    the view depends on (seed, epoch, index) only, never on batch size or rank.
    """

    def __init__(
        self,
        tensors: Mapping[str, torch.Tensor],
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size % world_size:
            raise ConfigError(
                f"global batch size {batch_size} is not divisible by {world_size} processes"
            )
        self.tensors = dict(tensors)
        self.count = int(self.tensors["labels"].shape[0])
        if self.count == 0:
            raise DataError("the token set is empty")
        self.batch_size, self.seed = batch_size, seed
        self.order = BatchOrder(self.count, batch_size, seed=seed, rank=rank, world_size=world_size)
        view_counts = {
            int(t.shape[1])
            for k, t in self.tensors.items()
            if item_dims(k) is not None and t.ndim == 2 + item_dims(k)
        }
        if len(view_counts) > 1:
            raise DataError(f"the token tensors disagree on their view count: {sorted(view_counts)}")
        self.views = view_counts.pop() if view_counts else 1
        self._epoch = -1
        self._view = torch.empty(0, dtype=torch.long)

    def _views(self, epoch: int) -> torch.Tensor:
        """The view of each item in ``epoch``, cached for the current epoch."""
        if epoch != self._epoch:
            # Drawn after the permutation, so single-view streams keep their old batches.
            self._view = (
                torch.randint(self.views, (self.count,), generator=self.order.epoch_generator(epoch))
                if self.views > 1
                else torch.zeros(self.count, dtype=torch.long)
            )
            self._epoch = epoch
        return self._view

    def positions(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(item rows, their views) of this rank's part of global batch ``step``."""
        rows, epochs = self.order.positions(step)
        views = torch.empty_like(rows)
        for epoch in epochs.unique().tolist():
            chosen = epochs == epoch
            views[chosen] = self._views(epoch)[rows[chosen]]
        return rows, views

    def indices(self, step: int) -> torch.Tensor:
        return self.positions(step)[0]

    def batch(self, step: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        rows, views = self.positions(step)
        out = {}
        for key, tensor in self.tensors.items():
            dims = item_dims(key)
            has_views = dims is not None and tensor.ndim == 2 + dims
            part = tensor[rows, views] if has_views else tensor[rows]
            part = part.float() if part.dtype.is_floating_point else part.long()
            out[key] = part.to(device, non_blocking=True)
        return out

    def epoch_of(self, step: int) -> float:
        return step * self.batch_size / self.count
