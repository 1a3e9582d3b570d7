"""Base for metrics that score each image pair and report the mean over images.

The state is a float64 sum and a count: it merges exactly across workers, and the mean
of per-image scores is what the tokenizer papers report (LlamaGen/FQGAN average PSNR over
images rather than computing one dataset-level MSE).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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

    def scores(self, batch: EvalBatch) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def update(self, batch: EvalBatch) -> None:
        if batch.real is None or batch.fake is None:
            return
        scores = self.scores(batch).detach().to("cpu", torch.float64)
        self.total += scores.sum()
        self.count += int(scores.numel())

    def merge(self, other: PerImageMean) -> PerImageMean:
        self.total += other.total
        self.count += other.count
        return self

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
