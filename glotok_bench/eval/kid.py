"""KID (kernel inception distance) beside FID, with torch-fidelity's definition.

Unbiased squared MMD with the polynomial kernel k(x, y) = (gamma x.y + coef0)^degree
(degree 3, gamma 1/d, coef0 1), averaged over ``subsets`` random subsets of
``subset_size`` features drawn without replacement from each side; the subsets come from
``numpy.random.RandomState(seed)`` in torch-fidelity's order (fake, then real, per subset),
so the same features give torch-fidelity's number. Unlike FID it is unbiased at small n,
which is why it is worth having at CPU scale (168 images).

When a side has fewer images than ``subset_size`` every subset is that whole side (in a
random order, which the kernel does not see), and the protocol records the size used.
torch-fidelity refuses that case outright.

KID needs the features themselves, not just moments: they are kept (float32, sorted by
dataset index so batch size and worker count do not change the subsets) and written as
``kid_features@<extractor>.npz`` next to the record, which is also what lets FID and KID be
bootstrapped over images later. 50k Inception features are 400 MB per side; ``write_features = false`` keeps them in memory only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glotok_bench.eval.batch import SIDES, EvalBatch
from glotok_bench.eval.extractors import build_extractor, metric_name
from glotok_bench.eval.options import KernelDistanceConfig
from glotok_bench.records import metric


def polynomial_mmd2(x: np.ndarray, y: np.ndarray, *, degree: int, gamma: float | None, coef0: float) -> float:
    """Unbiased MMD^2 between equal-size feature sets x, y [m, d] (float64)."""
    m = x.shape[0]
    if y.shape[0] != m or m < 2:
        raise ValueError(f"KID needs two sets of one size >= 2, got {x.shape[0]} and {y.shape[0]}")
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    k_xx = (x @ x.T * gamma + coef0) ** degree
    k_yy = (y @ y.T * gamma + coef0) ** degree
    k_xy = (x @ y.T * gamma + coef0) ** degree
    off_diagonal = (k_xx.sum() - np.trace(k_xx)) + (k_yy.sum() - np.trace(k_yy))
    return float(off_diagonal / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def kernel_distance(
    fake: np.ndarray, real: np.ndarray, *, subsets: int, subset_size: int, degree: int = 3,
    gamma: float | None = None, coef0: float = 1.0, seed: int = 2020,
) -> tuple[float, float, int]:
    """(mean, std over subsets, subset size used) of the polynomial MMD^2."""
    size = min(subset_size, len(fake), len(real))
    rng = np.random.RandomState(seed)
    values = np.zeros(subsets)
    fake, real = fake.astype(np.float64), real.astype(np.float64)
    for i in range(subsets):
        f = fake[rng.choice(len(fake), size, replace=False)]
        r = real[rng.choice(len(real), size, replace=False)]
        values[i] = polynomial_mmd2(f, r, degree=degree, gamma=gamma, coef0=coef0)
    return float(values.mean()), float(values.std()), size


class KernelDistance:
    """KID between ``fake`` (reconstructions) and ``real`` images on a feature extractor.

    Context: ``device``; ``data_protocol`` (copied into the result).
    """

    Config = KernelDistanceConfig  # in the torch-free eval/options.py, like the other built-ins

    def __init__(self, config: Config | None = None, *, device: torch.device | str = "cpu",
                 data_protocol: Mapping[str, Any] | None = None, **_: Any):
        self.config = config or self.Config()
        self.data_protocol = dict(data_protocol or {})
        self.extractor = build_extractor(
            self.config.extractor, inception_weights=self.config.inception_weights or None, device=device
        )
        self.features: dict[str, list[torch.Tensor]] = {side: [] for side in SIDES}
        self.ids: dict[str, list[torch.Tensor]] = {side: [] for side in SIDES}
        self.seen = dict.fromkeys(SIDES, 0)
        self._result: dict[str, dict[str, Any]] = {}

    def update(self, batch: EvalBatch) -> None:
        for side in SIDES:
            if getattr(batch, side) is None:
                continue
            pool = batch.features(self.extractor, side)["pool"].detach().float().cpu()
            ids = batch.sample_ids
            ids = torch.arange(self.seen[side], self.seen[side] + len(pool)) if ids is None else ids.cpu().long()
            self.features[side].append(pool)
            self.ids[side].append(ids)
            self.seen[side] += len(pool)

    def merge(self, other: KernelDistance) -> KernelDistance:
        for side in SIDES:
            self.features[side] += other.features[side]
            self.ids[side] += other.ids[side]
            self.seen[side] += other.seen[side]
        return self

    def side(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        """(dataset indices [n], features [n, d]) of one side, in dataset order."""
        if not self.features[side]:
            return np.zeros(0, np.int64), np.zeros((0, self.extractor.pool_dim), np.float32)
        ids = torch.cat(self.ids[side]).numpy()
        order = np.argsort(ids, kind="stable")
        return ids[order], torch.cat(self.features[side]).numpy()[order]

    def compute(self) -> dict[str, dict[str, Any]]:
        (_, fake), (_, real) = self.side("fake"), self.side("real")
        if len(fake) < 2 or len(real) < 2:
            raise ValueError(f"{self.config.label}: needs at least 2 real and 2 fake images "
                             f"(got {len(real)} and {len(fake)})")
        c = self.config
        mean, spread, size = kernel_distance(fake, real, subsets=c.subsets, subset_size=c.subset_size,
                                             degree=c.degree, gamma=c.gamma or None, coef0=c.coef0, seed=c.seed)
        protocol = {
            **self.data_protocol,
            **self.extractor.protocol(),
            "count": len(fake),
            "reference_count": len(real),
            "kernel": f"polynomial degree {c.degree}, gamma {c.gamma or '1/d'}, coef0 {c.coef0}",
            "estimator": "unbiased MMD^2 (torch-fidelity's definition)",
            "subsets": c.subsets,
            "subset_size": size,
            "subset_seed": c.seed,
        }
        self._result = {
            metric_name(c.label, self.extractor): metric(mean, protocol),
            metric_name(f"{c.label}_std", self.extractor): metric(spread, {**protocol, "definition": "std over subsets"}),
        }
        return self._result

    def write_artifacts(self, out_dir: Path) -> dict[str, str]:
        """Both sides' features and dataset indices, for paired comparisons and bootstraps."""
        from glotok_bench.atomic import atomic_write

        if not self.config.write_features:
            return {}
        (fake_ids, fake), (real_ids, real) = self.side("fake"), self.side("real")
        path = Path(out_dir) / f"kid_features@{self.extractor.name}.npz"
        atomic_write(path, lambda handle: np.savez(handle, fake=fake, fake_ids=fake_ids, real=real, real_ids=real_ids))
        return {"kid_features": str(path)}
