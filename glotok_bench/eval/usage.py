"""Codebook usage and perplexity per codebook over the evaluation set.

The state is one int64 histogram [K] per codebook, so it merges exactly. From it:

- usage = (codes hit at least once) / K
- perplexity = exp(H(p)), p the empirical code frequency (natural log; equals K for a
  perfectly uniform code distribution and 1 when a single code is used)

Both are over every token position of every evaluated image, not per batch: batch-level
perplexity (what training logs) underestimates usage for large codebooks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from glotok_bench.eval.batch import EvalBatch
from glotok_bench.eval.options import CodebookUsageConfig
from glotok_bench.records import metric


class CodebookUsage:
    """Counts ``batch.encoding.indices`` per codebook. Context: ``codebook_sizes``
    (``{branch: K}``, the tokenizer's ``codebook_sizes``), ``data_protocol``."""

    Config = CodebookUsageConfig  # torch-free, in eval/options.py, so run configs load fast

    def __init__(
        self,
        config: Config | None = None,
        *,
        codebook_sizes: Mapping[str, int],
        data_protocol: Mapping[str, Any] | None = None,
        **_: Any,
    ):
        self.config = config or self.Config()
        if not codebook_sizes:
            raise ValueError("codebook usage needs the tokenizer's codebook_sizes")
        self.data_protocol = dict(data_protocol or {})
        self.counts = {
            name: torch.zeros(int(size), dtype=torch.int64) for name, size in codebook_sizes.items()
        }
        self.images = 0

    def update(self, batch: EvalBatch) -> None:
        if batch.encoding is None:
            return
        indices = batch.encoding.indices
        unknown = set(indices) - set(self.counts)
        if unknown:
            raise ValueError(
                f"indices for unknown codebooks {sorted(unknown)}; sizes given for {sorted(self.counts)}"
            )
        for name, idx in indices.items():
            size = self.counts[name].numel()
            flat = idx.detach().reshape(-1).to("cpu", torch.int64)
            if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= size):
                raise ValueError(f"codebook {name!r}: an index lies outside [0, {size})")
            self.counts[name] += torch.bincount(flat, minlength=size)
        self.images += len(batch)

    def merge(self, other: CodebookUsage) -> CodebookUsage:
        for name, counts in other.counts.items():
            self.counts[name] += counts
        self.images += other.images
        return self

    def compute(self) -> dict[str, dict[str, Any]]:
        results = {}
        for name, counts in self.counts.items():
            total = int(counts.sum())
            if total == 0:
                raise ValueError(f"codebook {name!r}: no indices were given")
            p = counts[counts > 0].double() / total
            entropy = float(-(p * p.log()).sum())
            protocol = {
                **self.data_protocol,
                "count": self.images,
                "codebook": name,
                "codebook_size": counts.numel(),
                "tokens": total,
            }
            results[f"usage/{name}"] = metric(int((counts > 0).sum()) / counts.numel(), protocol)
            results[f"perplexity/{name}"] = metric(
                math.exp(entropy), {**protocol, "definition": "exp(entropy), natural log"}
            )
        return results
