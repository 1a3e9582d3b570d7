"""GloTok's global supervision: the histogram relation loss against a teacher codebook.

The teacher is a file, not a nested teacher config: the cache file a teacher source
writes (``CachedTeacher.cache_file``), a released checkpoint, or any tensor file, read
by key. That keeps this component free of the registry and makes the run record point
at the exact codebook used. Only the teacher's histogram is kept; its dimension need
not match the tokenizer's (relations are cosine similarities).
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import attrs
import torch
from torch import nn

from glotok_bench.errors import CheckpointError, ConfigError
from glotok_bench.histogram.api import (
    DEFAULT_EPS,
    DEFAULT_SAMPLED_PAIRS,
    check_teacher_histogram,
    histogram_relation_loss,
    relation_histogram,
)
from glotok_bench.teachers.cache import CODEBOOK_KEY
from glotok_bench.teachers.peer_files import read_tensor


class HistogramSupervision(nn.Module):
    """``histogram``: ``L_hist = KL(P_teacher || P_semantic codebook)`` (Eq. 4-7)."""

    uses_teacher_codebook = True  # glotok_bench.interfaces.Supervision

    @attrs.frozen(kw_only=True)
    class Config:
        teacher_file: str = ""  # teacher codebook file (.safetensors / .pt)
        teacher_key: str = CODEBOOK_KEY  # its key; "codebook" in teacher cache files
        teacher_weights: Literal["model", "ema"] = "model"
        bins: int = 40
        alpha: float | None = None  # None: (bins - 1)^2 / 8, kernel width = bin spacing
        normalize: Literal["sum", "l2"] = "sum"  # "l2" is Algorithm 1's literal norm
        reduction: Literal["sum", "mean"] = "sum"  # "mean" = kl_div's default, KL / bins
        eps: float = DEFAULT_EPS
        method: Literal["streaming", "direct", "sampled"] = "streaming"
        num_pairs: int = DEFAULT_SAMPLED_PAIRS  # "sampled" only
        tile: int = 0  # streaming block side; 0 picks one for the device

    def __init__(self, config: Config, *, semantic_dim: int, device: Any = "cpu"):
        super().__init__()
        self.config = config
        self.semantic_dim = semantic_dim
        if not config.teacher_file:
            raise ConfigError(
                "histogram supervision needs `teacher_file`: a teacher codebook file, e.g. "
                "the cache file a teacher source builds"
            )
        teacher = read_tensor(
            config.teacher_file, config.teacher_key, weights=config.teacher_weights
        )
        if teacher.dim() != 2 or teacher.shape[0] < 2 or not teacher.is_floating_point():
            raise CheckpointError(
                f"{config.teacher_file}: {config.teacher_key!r} has shape {list(teacher.shape)} "
                f"and dtype {teacher.dtype}; expected a float codebook [k >= 2, d]"
            )
        self.teacher_shape = tuple(teacher.shape)
        self.teacher_sha256 = hashlib.sha256(
            teacher.float().contiguous().numpy().tobytes()
        ).hexdigest()
        with torch.no_grad():
            hist = relation_histogram(teacher.to(device), **self._histogram_options())
        # Checked here, once: the check waits for the device, and the loss runs every step.
        hist = check_teacher_histogram(hist)
        # Not persistent: the histogram is derived from teacher_file, which the run
        # record names; a checkpoint must not silently carry an older teacher.
        self.register_buffer("teacher_hist", hist, persistent=False)

    def _histogram_options(self) -> dict[str, Any]:
        config = self.config
        return {
            "bins": config.bins,
            "alpha": config.alpha,
            "normalize": config.normalize,
            "method": config.method,
            "tile": config.tile or None,
            "num_pairs": config.num_pairs,
        }

    def loss(
        self,
        semantic_codebook: torch.Tensor,
        quantized_semantic: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unweighted ``L_hist`` of the raw semantic codebook ``[n, d]``: a float32 scalar."""
        options = self._histogram_options()
        options.pop("bins")
        return histogram_relation_loss(
            semantic_codebook,
            self.teacher_hist,
            reduction=self.config.reduction,
            eps=self.config.eps,
            check_teacher=False,  # checked once in __init__
            **options,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": "histogram",
            **attrs.asdict(self.config),
            "teacher_shape": list(self.teacher_shape),
            "teacher_sha256": self.teacher_sha256,
        }
