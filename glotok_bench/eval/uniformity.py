"""Uniformity of a latent distribution (paper Table 3, metrics defined by VA-VAE).

Pipeline, as LightningDiT's ``tools/latent_vis.py`` runs it: sample latent vectors (one
position of one image each), standardise every channel, embed in 2-D with t-SNE
(perplexity 30, seed 42), estimate the density at every embedded point with a Gaussian
KDE (scipy ``gaussian_kde``, Scott's bandwidth), then :func:`density_uniformity`:

- density CV          = std(d) / mean(d)                     (population std)
- normalised entropy  = H(d / sum d) / log2(n), H in bits    (1 for perfectly even)
- Gini                = sum_i (2i - n - 1) d_(i) / (n sum d), d sorted ascending, i = 1..n

t-SNE is stochastic and the sample is random, so the pipeline is repeated (VA-VAE: 10
times) with seeds ``seed + r`` and reported as mean and sample std over the repeats.

Streaming: :class:`LatentSampler` keeps, for each repeat, the ``n`` (image, draw) pairs
with the smallest hash keys: a uniform sample without replacement whose choice depends
only on (seed, repeat, dataset index), never on batch order or worker split, so merged
workers pick exactly what one pass would. It also accumulates per-channel sums over
*every* position for the standardisation, like VA-VAE's dataset-level latent statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glotok_bench.eval.batch import EvalBatch
from glotok_bench.eval.options import LatentUniformityConfig
from glotok_bench.records import metric

UNIFORMITY_METRICS = ("density_cv", "normalized_entropy", "gini")
UNIFORMITY_JSON = "uniformity.json"
UNIFORMITY_PNG = "uniformity_tsne.png"
LATENT_SOURCES = ("quantized", "with_residual", "continuous")


def density_uniformity(points: Any) -> dict[str, float]:
    """Points [n, 2] (e.g. a t-SNE embedding) -> {"density_cv", "normalized_entropy", "gini"}."""
    from scipy.stats import gaussian_kde

    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"expected points [n, 2], got {points.shape}")
    n = points.shape[0]
    if n < 3:
        raise ValueError(f"a 2-D kernel density needs at least 3 points, got {n}")
    density = gaussian_kde(points.T)(points.T)  # every point carries its own kernel: > 0
    total = density.sum()
    p = density / total
    ordered = np.sort(density)
    i = np.arange(1, n + 1)
    return {
        "density_cv": float(density.std() / density.mean()),
        "normalized_entropy": float(-(p * np.log2(p)).sum() / np.log2(n)),
        "gini": float(((2 * i - n - 1) * ordered).sum() / (n * total)),
    }


def tsne_embedding(
    vectors: Any, *, perplexity: float = 30.0, seed: int = 42, max_iter: int = 1000
) -> np.ndarray:
    """Standardised vectors [n, C] -> 2-D t-SNE embedding [n, 2] (scikit-learn, Barnes-Hut)."""
    from sklearn.manifold import TSNE

    vectors = np.asarray(vectors, dtype=np.float64)
    # scikit-learn refuses perplexity >= n; small evaluation sets still get a number.
    perplexity = min(perplexity, (vectors.shape[0] - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, random_state=seed, max_iter=max_iter)
    return tsne.fit_transform(vectors)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """A fixed, well-mixed uint64 hash (SplitMix64 finaliser); numpy uint64 arithmetic wraps."""
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _hash(seed: int, repeat: int, ids: np.ndarray, salt: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        mixed = _splitmix64(np.full(ids.shape, seed * 1_000_003 + repeat, dtype=np.uint64))
        mixed = _splitmix64(mixed ^ ids.astype(np.uint64))
        return _splitmix64(mixed ^ np.uint64(salt))


class LatentSampler:
    """Streams latents [B, C, h, w]; keeps ``repeats`` samples of up to ``n`` vectors [C].

    Each image contributes ``draws_per_image`` candidate positions per repeat (1, as in
    VA-VAE: one position per sampled image). State: per repeat, keys [<= n] and vectors
    [<= n, C]; per channel, float64 sum and sum of squares over all positions.
    """

    def __init__(self, n: int, *, repeats: int, seed: int, draws_per_image: int = 1):
        if n < 3 or repeats < 1 or draws_per_image < 1:
            raise ValueError("need n >= 3, repeats >= 1 and draws_per_image >= 1")
        self.n, self.repeats, self.seed, self.draws = n, repeats, seed, draws_per_image
        self.keys: list[torch.Tensor] = [
            torch.empty(0, dtype=torch.float64) for _ in range(repeats)
        ]
        self.vectors: list[torch.Tensor | None] = [None] * repeats
        self.channel_sum: torch.Tensor | None = None
        self.channel_sumsq: torch.Tensor | None = None
        self.positions = 0
        self._arrivals = 0

    def update(self, latents: torch.Tensor, sample_ids: torch.Tensor | None = None) -> None:
        if latents.ndim != 4:
            raise ValueError(f"expected latents [B, C, h, w], got {tuple(latents.shape)}")
        b, c, h, w = latents.shape
        if sample_ids is None:
            sample_ids = torch.arange(self._arrivals, self._arrivals + b)
        self._arrivals += b
        flat = latents.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).reshape(b, h * w, c)
        if self.channel_sum is None:
            self.channel_sum, self.channel_sumsq = (
                torch.zeros(c, dtype=torch.float64),
                torch.zeros(c, dtype=torch.float64),
            )
        self.channel_sum += flat.sum(dim=(0, 1))
        self.channel_sumsq += flat.square().sum(dim=(0, 1))
        self.positions += b * h * w
        ids = sample_ids.to("cpu", torch.int64).numpy().astype(np.uint64) * np.uint64(self.draws)
        ids = (ids[:, None] + np.arange(self.draws, dtype=np.uint64)[None, :]).reshape(
            -1
        )  # (image, draw)
        image_of = np.repeat(np.arange(b), self.draws)
        for r in range(self.repeats):
            keys = torch.from_numpy(
                (_hash(self.seed, r, ids, 0) >> np.uint64(11)).astype(np.float64) / 2.0**53
            )
            where = torch.from_numpy(
                (_hash(self.seed, r, ids, 1) % np.uint64(h * w)).astype(np.int64)
            )
            picked = flat[torch.from_numpy(image_of), where]
            self._keep(r, keys, picked)

    def _keep(self, r: int, keys: torch.Tensor, vectors: torch.Tensor) -> None:
        if self.vectors[r] is not None:
            keys = torch.cat([self.keys[r], keys])
            vectors = torch.cat([self.vectors[r], vectors])
        if keys.numel() > self.n:
            keep = torch.topk(keys, self.n, largest=False).indices
            keys, vectors = keys[keep], vectors[keep]
        order = torch.argsort(keys)  # a canonical order, so merges reproduce a single pass
        self.keys[r], self.vectors[r] = keys[order], vectors[order]

    def merge(self, other: LatentSampler) -> LatentSampler:
        if (other.n, other.repeats, other.seed, other.draws) != (
            self.n,
            self.repeats,
            self.seed,
            self.draws,
        ):
            raise ValueError("cannot merge latent samplers with different settings")
        if other.channel_sum is None:
            return self
        if self.channel_sum is None:
            self.channel_sum, self.channel_sumsq = (
                other.channel_sum.clone(),
                other.channel_sumsq.clone(),
            )
        else:
            self.channel_sum += other.channel_sum
            self.channel_sumsq += other.channel_sumsq
        self.positions += other.positions
        self._arrivals += other._arrivals
        for r in range(self.repeats):
            if other.vectors[r] is not None:
                self._keep(r, other.keys[r], other.vectors[r])
        return self

    def standardised(self, r: int) -> np.ndarray:
        """Repeat ``r``'s sample [m, C], each channel standardised with all-position stats."""
        if self.vectors[r] is None or self.channel_sum is None:
            raise ValueError("no latents were given")
        mean = self.channel_sum / self.positions
        std = (self.channel_sumsq / self.positions - mean.square()).clamp_min(0).sqrt()
        return ((self.vectors[r] - mean) / std.clamp_min(1e-12)).numpy()


def branch_latents(encoding: Any, branch: str, source: str) -> torch.Tensor:
    """The [B, d, h, w] latents of ``branch`` from an encoding's ``branches``.

    A branch entry is either a tensor or an object with ``quantized`` / ``with_residual``
    / ``continuous`` tensors (``source`` picks one).
    """
    branches = encoding.branches
    if branch not in branches:
        raise ValueError(f"the encoding has no {branch!r} branch (it has {', '.join(branches)})")
    entry = branches[branch]
    return entry if torch.is_tensor(entry) else getattr(entry, source)


def resolve_branch(branch: str, branch_names: Any) -> str:
    """``auto`` -> "semantic" when there is one (the paper's choice), else the only branch."""
    names = list(branch_names)
    if branch != "auto":
        return branch
    if "semantic" in names:
        return "semantic"
    if len(names) == 1:
        return names[0]
    raise ValueError(f"uniformity branch 'auto' is ambiguous among {names}; name one")


class LatentUniformity:
    """Table 3's uniformity of one branch's latents over the evaluation set.

    Context: ``codebook_sizes`` (names the branches, for ``branch="auto"``), ``data_protocol``.
    """

    Config = LatentUniformityConfig  # torch-free, in eval/options.py, so run configs load fast

    def __init__(
        self,
        config: Config | None = None,
        *,
        codebook_sizes: Mapping[str, int] | None = None,
        data_protocol: Mapping[str, Any] | None = None,
        **_: Any,
    ):
        self.config = config or self.Config()
        if self.config.source not in LATENT_SOURCES:
            raise ValueError(
                f"latent source must be one of {LATENT_SOURCES}, got {self.config.source!r}"
            )
        self.branch = resolve_branch(self.config.branch, (codebook_sizes or {"semantic": 0}).keys())
        self.data_protocol = dict(data_protocol or {})
        self.sampler = LatentSampler(
            self.config.samples,
            repeats=self.config.repeats,
            seed=self.config.seed,
            draws_per_image=self.config.draws_per_image,
        )
        self.images = 0

    def update(self, batch: EvalBatch) -> None:
        if batch.encoding is None:
            return
        self.sampler.update(
            branch_latents(batch.encoding, self.branch, self.config.source), batch.sample_ids
        )
        self.images += len(batch)

    def merge(self, other: LatentUniformity) -> LatentUniformity:
        self.sampler.merge(other.sampler)
        self.images += other.images
        return self

    def compute(self) -> dict[str, dict[str, Any]]:
        import sklearn

        runs = []
        for r in range(self.config.repeats):
            vectors = self.sampler.standardised(r)
            embedding = tsne_embedding(
                vectors,
                perplexity=self.config.perplexity,
                seed=self.config.seed + r,
                max_iter=self.config.tsne_iterations,
            )
            if r == 0:
                self._first_embedding = embedding  # for write_artifacts' scatter plot
            runs.append(density_uniformity(embedding))
        points = int(self.sampler.vectors[0].shape[0])
        protocol = {
            **self.data_protocol,
            "count": self.images,
            "branch": self.branch,
            "latents": self.config.source,
            "points": points,
            "points_requested": self.config.samples,
            "draws_per_image": self.config.draws_per_image,
            "standardisation": "per channel, mean/std over every evaluated position",
            "tsne": {
                "perplexity": min(self.config.perplexity, (points - 1) / 3),
                "seeds": [self.config.seed + r for r in range(self.config.repeats)],
                "iterations": self.config.tsne_iterations,
                "scikit-learn": sklearn.__version__,
            },
            "kde": "scipy.stats.gaussian_kde, Scott's bandwidth, evaluated at the points",
            "repeats": self.config.repeats,
        }
        results = {}
        for name in UNIFORMITY_METRICS:
            values = np.array([run[name] for run in runs])
            spread = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            results[f"uniformity/{name}"] = metric(
                float(values.mean()), {**protocol, "per_repeat": values.tolist()}
            )
            results[f"uniformity/{name}_std"] = metric(
                spread, {**protocol, "definition": "sample std over repeats"}
            )
        self._results = results
        return results

    def write_artifacts(self, out_dir: Path) -> dict[str, str]:
        """After :meth:`compute`: the results as ``uniformity.json`` and the first repeat's
        t-SNE points coloured by density as ``uniformity_tsne.png``."""
        from glotok_bench.atomic import atomic_write_json

        results = getattr(self, "_results", None)
        if not results:
            return {}
        artifacts = {"uniformity_json": str(atomic_write_json(Path(out_dir) / UNIFORMITY_JSON, results))}
        density_cv = results["uniformity/density_cv"]["value"]
        path = save_uniformity_plot(self._first_embedding, Path(out_dir) / UNIFORMITY_PNG,
                                    f"t-SNE of semantic latents (repeat 1), density CV {density_cv:.3f}")
        artifacts["uniformity_png"] = str(path)
        return artifacts


def save_uniformity_plot(embedding: np.ndarray, path: str | Path, title: str) -> Path:
    """The t-SNE points coloured by their Gaussian-KDE density: what the metrics summarise."""
    from scipy.stats import gaussian_kde

    from glotok_bench.atomic import atomic_write_bytes
    from glotok_bench.plotting import new_figure, png_bytes

    density = gaussian_kde(embedding.T)(embedding.T)
    figure = new_figure(4.5, 4.5, dpi=120)
    axis = figure.add_subplot()
    points = axis.scatter(embedding[:, 0], embedding[:, 1], c=density, s=4, cmap="viridis")
    figure.colorbar(points, ax=axis, label="KDE density")
    axis.set_title(title, fontsize=8)
    axis.set_xticks([])
    axis.set_yticks([])
    return atomic_write_bytes(path, png_bytes(figure))
