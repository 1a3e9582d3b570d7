"""Vector quantizers: one codebook (``vq``) or a semantic + visual pair (``dual``).

Both are the same machinery: each *branch* has an adapter (encoder features -> code
dimension: a 1x1 conv, or FQGAN's transformer head, see adapters.py) and a :class:`Codebook`. ``vq`` has the single branch ``"codes"``;
``dual`` has ``"semantic"`` then ``"visual"``, and their quantized features are
concatenated in that order, cat([semantic, visual]), as GloTok Sec. 3.2 writes it.
(FQGAN concatenates [visual, semantic]; its checkpoints need the halves swapped.)

Besides L_Q (Eq. 1) a quantizer can return FQGAN's recipe terms, already weighted, in
``QuantizerOutput.regularizers``: the codebook entropy loss (LlamaGen's
``compute_entropy_loss``) per codebook and, for ``dual``, the branch disentanglement
loss. GloTok's Eq. 13 has neither, so both weights default to 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from glotok_bench.errors import ConfigError
from glotok_bench.tokenizer.adapters import AdapterConfig, build_adapter
from glotok_bench.validators import positive

# Above this many distance-matrix entries the nearest-code search runs in row chunks, so
# a 256 px batch against 16,384 codes does not allocate gigabytes at once.
_MAX_DISTANCE_ENTRIES = 1 << 26

CodebookInit = Literal["auto", "normalized", "uniform"]


def _check_weight(owner: str, name: str, value: float) -> None:
    if value < 0:
        raise ConfigError(f"{owner}: {name} must be >= 0, got {value}")


def entropy_loss(affinity: torch.Tensor, temperature: float) -> torch.Tensor:
    """LlamaGen/FQGAN's codebook entropy loss of affinities [N, n] (higher = closer).

    Mean per-sample entropy of softmax(affinity / T) minus the entropy of the batch-mean
    assignment: low when each vector picks one code firmly and the batch spreads over
    many codes. The 1e-5 terms are upstream's (the one inside log_softmax is a no-op).
    """
    logits = affinity.float() / temperature
    probs = F.softmax(logits, dim=-1)
    sample_entropy = -(probs * F.log_softmax(logits, dim=-1)).sum(-1).mean()
    mean_probs = probs.mean(0)
    batch_entropy = -(mean_probs * torch.log(mean_probs + 1e-5)).sum()
    return sample_entropy - batch_entropy


def disentanglement_loss(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """FQGAN's branch disentanglement: mean squared cosine of two [B, d, h, w] code maps,
    position by position (0 when every visual code is orthogonal to its semantic code)."""
    cosine = F.cosine_similarity(first.float(), second.float(), dim=1)
    return cosine.square().mean()


@dataclass
class QuantizedBranch:
    """One branch of a quantizer's output; all tensors are [B, d, h, w] except indices."""

    continuous: torch.Tensor  # adapter output (l2-normalised for cosine codebooks): Z
    quantized: torch.Tensor  # nearest codes with a straight-through gradient: Z_hat
    indices: torch.Tensor  # LongTensor [B, h, w]
    # The same values as ``quantized``, but the gradient goes to the codebook (as in
    # L_Q's codebook term), not through the straight-through path to the encoder.
    code: torch.Tensor | None = None


@dataclass
class QuantizerOutput:
    branches: dict[str, QuantizedBranch]  # in decoder-concatenation order
    loss: torch.Tensor  # L_Q (Eq. 1), summed over branches
    stats: dict[str, torch.Tensor]  # "<branch>/usage", "<branch>/perplexity" (this batch)
    # Extra objective terms by name, each already multiplied by its configured weight
    # (only those with a weight > 0): "entropy" (summed over codebooks), "disentangle".
    regularizers: dict[str, torch.Tensor] = field(default_factory=dict)


class Codebook(nn.Module):
    """A learnable codebook [n, d] with nearest-code lookup and L_Q (GloTok Eq. 1).

    ``distance="cosine"`` l2-normalises features and codes before matching and uses the
    normalised vectors as the quantized output (LlamaGen/FQGAN style); the stored weight
    stays un-normalised.

    ``init``: rows drawn from uniform(+-1/n), then l2-normalised (``"normalized"``,
    LlamaGen's and FQGAN's ``codebook_l2_norm`` init) or left at length ~1/n
    (``"uniform"``, taming's VQGAN). ``"auto"`` normalises exactly when matching is
    cosine, as upstream ties both to one flag. Why it matters for cosine codebooks:
    rows of length ~4e-4 turn by tens of degrees in Adam's first step, so the
    codebook is reshaped (by L_hist, say) before the encoder's features mean anything.
    """

    def __init__(
        self,
        size: int,
        dim: int,
        distance: Literal["euclidean", "cosine"],
        beta: float,
        *,
        init: CodebookInit = "auto",
        entropy_weight: float = 0.0,
        entropy_temperature: float = 0.01,
    ):
        super().__init__()
        self.size, self.dim, self.distance, self.beta = size, dim, distance, beta
        self.entropy_weight, self.entropy_temperature = entropy_weight, entropy_temperature
        self.embedding = nn.Embedding(size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / size, 1.0 / size)
        if init == "normalized" or (init == "auto" and distance == "cosine"):
            with torch.no_grad():
                self.embedding.weight.copy_(F.normalize(self.embedding.weight, dim=-1))
        # Codes hit since the last usage report (training only). Saved with the weights so
        # a resumed run reports the same usage windows as an uninterrupted one.
        self.register_buffer("hits", torch.zeros(size, dtype=torch.long))

    def codes(self) -> torch.Tensor:
        """The codes as used for matching: [n, d] (normalised for cosine)."""
        weight = self.embedding.weight
        return F.normalize(weight, dim=-1) if self.distance == "cosine" else weight

    @torch.no_grad()
    def nearest(self, flat: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of ``flat`` [N, d] -> LongTensor [N]."""
        chunk = max(1, _MAX_DISTANCE_ENTRIES // codes.shape[0])
        pieces = []
        for start in range(0, flat.shape[0], chunk):  # one iteration unless very large
            rows = flat[start : start + chunk]
            if self.distance == "cosine":
                # |z|^2 + |e|^2 - 2 z.e, summed exactly as LlamaGen/FQGAN do: on unit vectors
                # this ranks like z.e, but near-ties must break the same way as theirs for
                # their checkpoints to give identical token indices.
                squared = rows.square().sum(1, keepdim=True) + codes.square().sum(1)
                pieces.append((squared - 2 * torch.mm(rows, codes.t())).argmin(dim=1))
            else:
                # cdist beats the expanded |a|^2 - 2ab + |b|^2 form at d = 8 (measured).
                pieces.append(torch.cdist(rows, codes).argmin(dim=1))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def forward(
        self, z: torch.Tensor
    ) -> tuple[QuantizedBranch, torch.Tensor, dict[str, torch.Tensor]]:
        """z [B, d, h, w] -> (branch, L_Q, stats). Runs in fp32 even under autocast."""
        b, d, h, w = z.shape
        with torch.autocast(z.device.type, enabled=False):
            flat = z.float().permute(0, 2, 3, 1).reshape(-1, d)
            if self.distance == "cosine":
                flat = F.normalize(flat, dim=-1)
            codes = self.codes()
            indices = self.nearest(flat.detach(), codes.detach())
            code = F.embedding(indices, codes)
            # Eq. 1: ||sg[Z] - Z_hat||^2 + beta ||sg[Z_hat] - Z||^2
            loss = F.mse_loss(code, flat.detach()) + self.beta * F.mse_loss(code.detach(), flat)
            zq = flat + (code - flat).detach()  # straight-through estimator
        stats = self._stats(indices)
        to_map = lambda t: t.reshape(b, h, w, d).permute(0, 3, 1, 2)  # noqa: E731
        branch = QuantizedBranch(
            to_map(flat), to_map(zq), indices.reshape(b, h, w), code=to_map(code)
        )
        return branch, loss, stats

    def weighted_entropy_loss(self, continuous: torch.Tensor) -> torch.Tensor | None:
        """entropy_weight x the entropy loss of this branch's Z [B, d, h, w], or None at 0.

        The affinity is minus the squared distance to every code, as upstream (for unit
        vectors that is 2 cos - 2); the gradient reaches both the encoder and the codes.
        """
        if self.entropy_weight == 0 or not self.training:  # a training objective only
            return None
        with torch.autocast(continuous.device.type, enabled=False):
            flat = continuous.float().permute(0, 2, 3, 1).reshape(-1, self.dim)
            codes = self.codes()
            distance = (
                flat.square().sum(1, keepdim=True) + codes.square().sum(1) - 2.0 * flat @ codes.T
            )
            return self.entropy_weight * entropy_loss(-distance, self.entropy_temperature)

    @torch.no_grad()
    def _stats(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        # index_add_ rather than bincount: CUDA bincount syncs with the host to size its output.
        counts = torch.zeros(self.size, dtype=torch.long, device=indices.device)
        counts.index_add_(0, indices, torch.ones_like(indices))
        if self.training:
            self.hits += counts
        probs = counts.float() / indices.numel()
        perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
        return {"usage": (counts > 0).float().mean(), "perplexity": perplexity}

    def window_usage(self, reset: bool = True) -> torch.Tensor:
        """Fraction of codes hit since the last reset (a 0-dim tensor)."""
        usage = (self.hits > 0).float().mean()
        if reset:
            self.hits.zero_()
        return usage

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """LongTensor [B, h, w] -> codes [B, d, h, w]."""
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.size):
            raise ValueError(f"code index out of range [0, {self.size}) for this codebook")
        return F.embedding(indices.long(), self.codes()).permute(0, 3, 1, 2)


class BranchedQuantizer(nn.Module):
    """Shared implementation: per branch an adapter and a codebook. Context: ``in_channels``.

    ``token_grid``: the token grid side the adapters are built for (None: any), which the
    :class:`~glotok_bench.tokenizer.model.Tokenizer` checks against its autoencoder's.
    """

    def __init__(
        self,
        branches: dict[str, int],
        *,
        in_channels: int,
        code_dim: int,
        distance: Literal["euclidean", "cosine"],
        beta: float,
        codebook_init: CodebookInit = "auto",
        entropy_weight: float = 0.0,
        entropy_temperature: float = 0.01,
        disentangle_weight: float = 0.0,
        adapter: AdapterConfig | None = None,  # None: the 1x1 conv adapter
    ):
        super().__init__()
        adapter = adapter or AdapterConfig()
        name = type(self).__name__
        if code_dim <= 0:
            raise ConfigError(f"{name}: code_dim must be positive, got {code_dim}")
        for branch, size in branches.items():
            if size < 2:
                raise ConfigError(f"{name}: codebook {branch!r} needs at least 2 codes, got {size}")
        _check_weight(name, "beta", beta)
        _check_weight(name, "entropy_weight", entropy_weight)
        _check_weight(name, "disentangle_weight", disentangle_weight)
        if not entropy_temperature > 0:
            raise ConfigError(f"{name}: entropy_temperature must be > 0, got {entropy_temperature}")
        if disentangle_weight > 0 and len(branches) != 2:
            raise ConfigError(f"{name}: disentangle_weight needs exactly two codebooks")
        self.disentangle_weight = disentangle_weight
        self.code_dims = {branch: code_dim for branch in branches}
        self.codebook_sizes = dict(branches)
        self.out_channels = code_dim * len(branches)
        self.token_grid = adapter.token_grid()
        self.adapters = nn.ModuleDict(
            {b: build_adapter(adapter, in_channels=in_channels, code_dim=code_dim) for b in branches}
        )
        self.codebooks = nn.ModuleDict(
            {
                b: Codebook(
                    size,
                    code_dim,
                    distance,
                    beta,
                    init=codebook_init,
                    entropy_weight=entropy_weight,
                    entropy_temperature=entropy_temperature,
                )
                for b, size in branches.items()
            }
        )

    @property
    def branch_names(self) -> tuple[str, ...]:
        return tuple(self.codebook_sizes)

    def forward(self, features: torch.Tensor) -> QuantizerOutput:
        """Encoder features [B, in_channels, h, w] -> per-branch codes and L_Q."""
        branches: dict[str, QuantizedBranch] = {}
        stats: dict[str, torch.Tensor] = {}
        losses, entropies = [], []
        for name in self.codebook_sizes:  # one or two branches
            codebook = self.codebooks[name]
            branch, loss, branch_stats = codebook(self.adapters[name](features))
            branches[name] = branch
            losses.append(loss)
            entropy = codebook.weighted_entropy_loss(branch.continuous)
            if entropy is not None:
                entropies.append(entropy)
            stats.update({f"{name}/{key}": value for key, value in branch_stats.items()})
        regularizers: dict[str, torch.Tensor] = {}
        if entropies:
            regularizers["entropy"] = torch.stack(entropies).sum()
        if self.disentangle_weight > 0 and self.training:
            # On the straight-through codes, as FQGAN: the values are the codes, the
            # gradient goes to the encoder and adapters, not the codebooks.
            first, second = (branch.quantized for branch in branches.values())
            regularizers["disentangle"] = self.disentangle_weight * disentanglement_loss(
                first, second
            )
        return QuantizerOutput(branches, torch.stack(losses).sum(), stats, regularizers)

    def lookup(self, indices: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{branch: LongTensor [B, h, w]} -> {branch: codes [B, d, h, w]} (no residual)."""
        missing = set(self.codebook_sizes) - set(indices)
        if missing:
            raise ValueError(
                f"indices lack branch(es) {sorted(missing)}; expected {list(self.codebook_sizes)}"
            )
        return {name: self.codebooks[name].lookup(indices[name]) for name in self.codebook_sizes}

    def codebook_weight(self, name: str) -> torch.Tensor:
        """The raw learnable (un-normalised) codebook of branch ``name``: [n, d]."""
        return self.codebooks[name].embedding.weight

    def window_usage(self, reset: bool = True) -> dict[str, torch.Tensor]:
        return {
            f"{name}/usage_window": cb.window_usage(reset) for name, cb in self.codebooks.items()
        }


class VectorQuantizer(BranchedQuantizer):
    """The ``vq`` quantizer: one codebook, branch ``"codes"``. Context: ``in_channels``."""

    @attrs.frozen(kw_only=True)
    class Config:
        codebook_size: int = attrs.field(default=16_384, validator=positive)
        code_dim: int = attrs.field(default=8, validator=positive)
        distance: Literal["euclidean", "cosine"] = "cosine"
        beta: float = 0.25  # commitment weight of Eq. 1
        # "auto": l2-normalised rows for cosine codebooks, as LlamaGen (see Codebook).
        codebook_init: CodebookInit = "auto"
        # LlamaGen's entropy loss (its `entropy_loss_ratio`; 0 in its VQ-16 recipe).
        entropy_weight: float = 0.0
        entropy_temperature: float = 0.01
        adapter: AdapterConfig = AdapterConfig()  # conv1x1, or FQGAN's per-branch transformer

        # glotok_bench.interfaces.QuantizerConfig: read by run labels and supervision.
        def codebook_label(self) -> str:
            return str(self.codebook_size)

        def semantic_dim(self) -> int:
            return self.code_dim

    def __init__(self, config: Config, *, in_channels: int):
        super().__init__(
            {"codes": config.codebook_size},
            in_channels=in_channels,
            code_dim=config.code_dim,
            distance=config.distance,
            beta=config.beta,
            codebook_init=config.codebook_init,
            entropy_weight=config.entropy_weight,
            entropy_temperature=config.entropy_temperature,
            adapter=config.adapter,
        )
        self.config = config


class DualQuantizer(BranchedQuantizer):
    """The ``dual`` quantizer: semantic + visual codebooks. Context: ``in_channels``.

    Sizes default to GloTok's 4096 + 12288 (16,384 in total); GloTok(2x) is 16384 + 16384.
    """

    @attrs.frozen(kw_only=True)
    class Config:
        semantic_size: int = attrs.field(default=4_096, validator=positive)
        visual_size: int = attrs.field(default=12_288, validator=positive)
        code_dim: int = attrs.field(default=8, validator=positive)
        distance: Literal["euclidean", "cosine"] = "cosine"
        beta: float = 0.25
        # "auto": l2-normalised rows for cosine codebooks, as LlamaGen/FQGAN (see Codebook).
        codebook_init: CodebookInit = "auto"
        # FQGAN's recipe terms (fqgan-local presets: 0.03 and 0.1). GloTok's objective,
        # Eq. 13, has neither, so its presets keep both at 0.
        entropy_weight: float = 0.0  # per codebook, FQGAN's entropy_loss_ratio
        entropy_temperature: float = 0.01
        disentangle_weight: float = 0.0  # FQGAN's disentanglement_ratio
        adapter: AdapterConfig = AdapterConfig()  # conv1x1, or FQGAN's per-branch transformer

        # glotok_bench.interfaces.QuantizerConfig: read by run labels and supervision.
        def codebook_label(self) -> str:
            return f"{self.semantic_size}+{self.visual_size}"

        def semantic_dim(self) -> int:
            return self.code_dim

    def __init__(self, config: Config, *, in_channels: int):
        super().__init__(
            {"semantic": config.semantic_size, "visual": config.visual_size},
            in_channels=in_channels,
            code_dim=config.code_dim,
            distance=config.distance,
            beta=config.beta,
            codebook_init=config.codebook_init,
            entropy_weight=config.entropy_weight,
            entropy_temperature=config.entropy_temperature,
            disentangle_weight=config.disentangle_weight,
            adapter=config.adapter,
        )
        self.config = config
