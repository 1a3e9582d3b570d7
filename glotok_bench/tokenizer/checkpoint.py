"""Tokenizer checkpoints: atomic saves, safe loads, clear errors.

A checkpoint is a ``torch.save`` dict of tensors and plain data only, so it loads with
``torch.load(..., weights_only=True)``, which refuses pickled code. Layout::

    format: "glotok-bench/tokenizer"   version: 1
    tokenizer_config: plain dict (TokenizerConfig via to_dict)
    architecture: {parameter name: shape}      codebook_sizes: {branch: n}
    model: state_dict                          ema: state_dict or None
    step: int                                  training: optimiser/discriminator/RNG state or None

Loading checks format, then codebook sizes, then every parameter shape, and raises
:class:`~glotok_bench.errors.CheckpointError` naming the first differences. Nothing is
written while loading, so a failed load leaves every file as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from glotok_bench.atomic import atomic_torch_save
from glotok_bench.config import to_dict
from glotok_bench.errors import CheckpointError, GlotokError
from glotok_bench.registry import Registry
from glotok_bench.safe_load import torch_load_weights_only
from glotok_bench.tokenizer.config import TokenizerConfig
from glotok_bench.tokenizer.model import Tokenizer, tokenizer_config_from_dict

FORMAT = "glotok-bench/tokenizer"
VERSION = 1


def architecture(module: torch.nn.Module) -> dict[str, list[int]]:
    """{state-dict key: shape} of a module: what a checkpoint must match to load into it."""
    return {name: list(t.shape) for name, t in module.state_dict().items()}


def save_checkpoint(
    path: str | Path,
    tokenizer: Tokenizer,
    *,
    ema: Mapping[str, torch.Tensor] | None = None,
    step: int = 0,
    training: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file in the same folder, then rename)."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "tokenizer_config": to_dict(tokenizer.config),
        "architecture": architecture(tokenizer),
        "codebook_sizes": tokenizer.codebook_sizes,
        "model": _cpu_state(tokenizer.state_dict()),
        "ema": None if ema is None else _cpu_state(ema),
        "step": int(step),
        "training": training,
    }
    return atomic_torch_save(path, payload)


def _cpu_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate the outer format of a checkpoint (tensors on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    payload = torch_load_weights_only(path, what="checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        keys = sorted(payload)[:8] if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path} is not a glotok-bench tokenizer checkpoint (expected format {FORMAT!r}; "
            f"top-level keys: {keys}). Peer checkpoints (LlamaGen, FQGAN) need a converter."
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {payload.get('version')} is not supported ({VERSION})"
        )
    for key in ("tokenizer_config", "architecture", "model"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"{path}: checkpoint entry {key!r} is missing or malformed")
    return payload



def check_compatible(payload: Mapping[str, Any], tokenizer: Tokenizer, source: str) -> None:
    """Raise CheckpointError unless ``payload`` was saved from ``tokenizer``'s architecture."""
    saved_sizes = payload.get("codebook_sizes")
    if saved_sizes is not None and dict(saved_sizes) != tokenizer.codebook_sizes:
        raise CheckpointError(
            f"{source}: the checkpoint's codebooks {dict(saved_sizes)} do not fit the configured "
            f"model's codebooks {tokenizer.codebook_sizes}"
        )
    expected = architecture(tokenizer)
    saved = payload["architecture"]
    problems = [f"missing {k}" for k in expected if k not in saved]
    problems += [f"unexpected {k}" for k in saved if k not in expected]
    problems += [
        f"{k}: checkpoint {list(saved[k])} vs model {shape}"
        for k, shape in expected.items()
        if k in saved and list(saved[k]) != shape
    ]
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise CheckpointError(f"{source} is from another architecture: {shown}")


def load_tokenizer(
    path: str | Path,
    *,
    config: TokenizerConfig | None = None,
    weights: Literal["ema", "model"] = "ema",
    device: str | torch.device = "cpu",
    registry: Registry | None = None,
) -> tuple[Tokenizer, dict[str, Any]]:
    """Rebuild a tokenizer from a checkpoint -> (tokenizer in eval mode, payload).

    ``config``: build this architecture and check the checkpoint fits it (default: the
    config stored in the checkpoint). ``weights="ema"`` uses the EMA weights when saved.
    """
    payload = read_checkpoint(path)
    try:
        if config is None:
            config = tokenizer_config_from_dict(payload["tokenizer_config"], registry=registry)
        tokenizer = Tokenizer(config, registry=registry)
    except GlotokError as exc:
        raise CheckpointError(f"{path}: cannot build the tokenizer it describes: {exc}") from exc
    check_compatible(payload, tokenizer, str(path))
    state = (
        payload["ema"] if weights == "ema" and payload.get("ema") is not None else payload["model"]
    )
    tokenizer.load_state_dict(state, strict=True)
    return tokenizer.to(device).eval(), payload
