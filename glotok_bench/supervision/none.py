"""No semantic supervision: a zero loss, so grids can include the unsupervised baseline."""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch import nn


class NoSupervision(nn.Module):
    """``none``: contributes nothing to the objective."""

    uses_teacher_codebook = False  # glotok_bench.interfaces.Supervision

    @attrs.frozen(kw_only=True)
    class Config:
        pass

    def __init__(self, config: Config, *, semantic_dim: int, device: Any = "cpu"):
        super().__init__()
        self.config = config

    def loss(
        self,
        semantic_codebook: torch.Tensor,
        quantized_semantic: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """A float32 zero on the codebook's device."""
        return semantic_codebook.new_zeros((), dtype=torch.float32)

    def describe(self) -> dict[str, Any]:
        return {"name": "none"}
