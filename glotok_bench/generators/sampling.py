"""Sampling helpers: classifier-free guidance, its schedule, and logits -> token draws.

Guidance is written ``cond + (scale - 1) * (cond - uncond)`` rather than the usual
``uncond + scale * (cond - uncond)``: the two are equal, but this form returns ``cond``
bit for bit at scale 1, so a guided batch whose scale is 1 at some step (the start of a
linear schedule) reproduces the unguided result exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from glotok_bench.errors import ConfigError
from glotok_bench.generators.options import CfgSchedule


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance on logits or velocities of the same shape."""
    if scale == 1.0:
        return cond
    return cond + (scale - 1.0) * (cond - uncond)


def cfg_scale_at(step: int, total: int, scale: float, schedule: CfgSchedule) -> float:
    """Guidance scale at ``step`` of ``total``: constant, or linear from 1 (first) to ``scale`` (last).

    xAR ramps guidance per cell this way: the first cells fix the global layout, where
    strong guidance costs diversity, and the last cells add detail.
    """
    if schedule == "constant" or total <= 1:
        return scale
    if schedule == "linear":
        return 1.0 + (scale - 1.0) * step / (total - 1)
    raise ConfigError(f"unknown guidance schedule {schedule!r}; use 'constant' or 'linear'")


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Keep the ``top_k`` largest logits and the smallest set with probability >= ``top_p``.

    logits [..., V]; the rest become -inf. ``top_k`` 0 and ``top_p`` 1 keep everything.
    """
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the tokens ranked above it already reach top_p; the best stays.
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_logits(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one index per row: logits [B, V] -> LongTensor [B]. Temperature 0 takes the argmax."""
    if temperature < 0 or not 0.0 < top_p <= 1.0 or top_k < 0:
        raise ConfigError(
            f"sampling needs temperature >= 0, 0 < top_p <= 1 and top_k >= 0; "
            f"got temperature={temperature}, top_p={top_p}, top_k={top_k}"
        )
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@contextlib.contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[None]:
    """Run with dropout (and class dropout) off, restoring the module's mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator | None:
    """A seeded generator on ``device`` (None -> the global RNG)."""
    if seed is None:
        return None
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed(int(seed))
    return generator
