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
from glotok_bench.checkpoint_format import (
    architecture,
    architecture_mismatch,
    cpu_state,
    read_envelope,
)
from glotok_bench.config import to_dict
from glotok_bench.errors import CheckpointError, GlotokError
from glotok_bench.registry import Registry
from glotok_bench.tokenizer.config import TokenizerConfig
from glotok_bench.tokenizer.model import Tokenizer, tokenizer_config_from_dict

FORMAT = "glotok-bench/tokenizer"
VERSION = 1


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
        "model": cpu_state(tokenizer.state_dict()),
        "ema": None if ema is None else cpu_state(ema),
        "step": int(step),
        "training": training,
    }
    return atomic_torch_save(path, payload)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate the outer format of a checkpoint (tensors on CPU)."""
    return read_envelope(
        path, kind="tokenizer", format_tag=FORMAT, version=VERSION,
        required=("tokenizer_config", "architecture", "model"),
        hint=" Peer checkpoints (LlamaGen, FQGAN) need a converter.",
    )  # fmt: skip



def check_compatible(payload: Mapping[str, Any], tokenizer: Tokenizer, source: str) -> None:
    """Raise CheckpointError unless ``payload`` was saved from ``tokenizer``'s architecture."""
    saved_sizes = payload.get("codebook_sizes")
    if saved_sizes is not None and dict(saved_sizes) != tokenizer.codebook_sizes:
        raise CheckpointError(
            f"{source}: the checkpoint's codebooks {dict(saved_sizes)} do not fit the configured "
            f"model's codebooks {tokenizer.codebook_sizes}"
        )
    mismatch = architecture_mismatch(payload["architecture"], architecture(tokenizer))
    if mismatch:
        raise CheckpointError(f"{source} is from another architecture: {mismatch}")


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
