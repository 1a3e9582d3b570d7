"""Base for metrics that score each image pair and report the mean over images.

The state is a float64 sum and a count: it merges exactly across workers, and the mean
of per-image scores is what the tokenizer papers report (LlamaGen/FQGAN average PSNR over
images rather than computing one dataset-level MSE). The scores themselves are kept too
(8 bytes an image) and written as ``per_image_<name>.npz`` (``sample_ids``, ``values``, in
dataset order) next to the record: two tokenizers evaluated on the same images can then be
compared image by image (a paired test) instead of by their means alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glotok_bench.eval.batch import EvalBatch
from glotok_bench.records import metric


class PerImageMean:
    """Subclasses set ``name`` and ``Config`` and implement ``scores(batch) -> Tensor[B]`` and
    ``describe()``. Unused context keyword arguments are accepted and ignored, so every
    metric can be built from one evaluation context."""

    name = ""
    Config: Any = None

    def __init__(
        self, config: Any = None, *, data_protocol: Mapping[str, Any] | None = None, **_: Any
    ):
        self.config = config if config is not None else self.Config()
        self.data_protocol = dict(data_protocol or {})
        self.total = torch.zeros((), dtype=torch.float64)
        self.count = 0
        self.scores_seen: list[torch.Tensor] = []
        self.ids_seen: list[torch.Tensor] = []

    def scores(self, batch: EvalBatch) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def update(self, batch: EvalBatch) -> None:
        if batch.real is None or batch.fake is None:
            return
        scores = self.scores(batch).detach().to("cpu", torch.float64)
        ids = batch.sample_ids
        ids = torch.arange(self.count, self.count + len(scores)) if ids is None else ids.detach().cpu().long()
        self.scores_seen.append(scores)
        self.ids_seen.append(ids)
        self.total += scores.sum()
        self.count += int(scores.numel())

    def merge(self, other: PerImageMean) -> PerImageMean:
        self.total += other.total
        self.count += other.count
        self.scores_seen += other.scores_seen
        self.ids_seen += other.ids_seen
        return self

    def per_image(self) -> tuple[np.ndarray, np.ndarray]:
        """(dataset indices [n] int64, scores [n] float64), in dataset order."""
        if not self.scores_seen:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        ids = torch.cat(self.ids_seen).numpy()
        order = np.argsort(ids, kind="stable")
        return ids[order], torch.cat(self.scores_seen).numpy()[order]

    def write_artifacts(self, out_dir: Path) -> dict[str, str]:
        from glotok_bench.atomic import atomic_write

        ids, values = self.per_image()
        path = Path(out_dir) / f"per_image_{self.name}.npz"
        atomic_write(path, lambda handle: np.savez(handle, sample_ids=ids, values=values))
        return {f"per_image_{self.name}": str(path)}

    def compute(self) -> dict[str, dict[str, Any]]:
        if self.count == 0:
            raise ValueError(f"{self.name}: no image pairs were given")
        protocol = {
            **self.data_protocol,
            **self.describe(),
            "count": self.count,
            "reduction": "mean over images",
        }
        return {self.name: metric(float(self.total / self.count), protocol)}
