"""Streaming Inception Score: exp(E_x KL(p(y|x) || p(y))), per split, without keeping logits.

For one split of n samples, sum_x KL(p_x || q) with q = mean_x p_x expands to

    sum_x sum_y p_x(y) log p_x(y)  -  sum_y (sum_x p_x(y)) log q(y)

so each split needs only its count, the vector sum_x p_x [k] and the scalar
sum_x sum_y p log p: sufficient statistics that add across batches and workers.

Split assignment: torch-fidelity shuffles all N logits with a seeded permutation and cuts
them into ``splits`` chunks, which needs N and every logit up front. Streaming, a sample
goes to split ``sample_id % splits`` where ``sample_id`` is its index in the dataset (or
its arrival order when no index is given): a fixed partition that merges exactly across
workers. With ``splits=1`` the two agree to float64 rounding; with more splits the mean
agrees closely and the spread differs only through which samples share a split.
"""

from __future__ import annotations

import attrs
import torch


@attrs.frozen
class InceptionScoreValue:
    mean: float
    std: float
    splits: int
    count: int


class InceptionScoreAccumulator:
    """Logits [n, k] in, per-split sufficient statistics kept (float64)."""

    def __init__(self, num_classes: int, splits: int = 10, device: torch.device | str = "cpu"):
        if splits < 1:
            raise ValueError(f"splits must be >= 1, got {splits}")
        self.num_classes, self.splits = num_classes, splits
        self.count = torch.zeros(splits, dtype=torch.float64, device=device)
        self.sum_p = torch.zeros(splits, num_classes, dtype=torch.float64, device=device)
        self.sum_plogp = torch.zeros(splits, dtype=torch.float64, device=device)
        self._arrivals = 0

    def update(self, logits: torch.Tensor, sample_ids: torch.Tensor | None = None) -> None:
        """Add logits [n, k]; ``sample_ids`` [n] (dataset indices) fix each sample's split."""
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"expected logits [n, {self.num_classes}], got {tuple(logits.shape)}")
        n = logits.shape[0]
        if sample_ids is None:
            sample_ids = torch.arange(self._arrivals, self._arrivals + n)
        self._arrivals += n
        device = self.count.device
        split = (sample_ids.to(device=device, dtype=torch.long) % self.splits).reshape(n)
        log_p = logits.detach().to(device=device, dtype=torch.float64).log_softmax(dim=1)
        p = log_p.exp()
        self.count.index_add_(0, split, torch.ones(n, dtype=torch.float64, device=device))
        self.sum_p.index_add_(0, split, p)
        self.sum_plogp.index_add_(0, split, (p * log_p).sum(dim=1))

    def merge(self, other: InceptionScoreAccumulator) -> InceptionScoreAccumulator:
        if (other.num_classes, other.splits) != (self.num_classes, self.splits):
            raise ValueError("cannot merge Inception Score states with different classes or splits")
        self.count += other.count.to(self.count.device)
        self.sum_p += other.sum_p.to(self.sum_p.device)
        self.sum_plogp += other.sum_plogp.to(self.sum_plogp.device)
        self._arrivals += other._arrivals
        return self

    def compute(self) -> InceptionScoreValue:
        """Mean and (population) std of exp(mean KL) over the non-empty splits."""
        used = self.count > 0
        if not bool(used.any()):
            raise ValueError("Inception Score of zero samples")
        count, sum_p, sum_plogp = self.count[used], self.sum_p[used], self.sum_plogp[used]
        q = sum_p / count[:, None]
        # 0 * log 0 = 0: a class no sample of the split predicts adds nothing.
        cross = torch.where(
            sum_p > 0, sum_p * q.clamp_min(torch.finfo(torch.float64).tiny).log(), 0.0
        ).sum(dim=1)
        scores = ((sum_plogp - cross) / count).exp()
        return InceptionScoreValue(
            mean=float(scores.mean()),
            std=float(scores.std(correction=0)) if len(scores) > 1 else 0.0,
            splits=int(used.sum()),
            count=int(self.count.sum()),
        )
