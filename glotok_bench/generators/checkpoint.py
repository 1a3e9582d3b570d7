"""Generator checkpoints: atomic saves, ``weights_only`` loads, clear errors.

Layout (tensors and plain data only, so ``torch.load(..., weights_only=True)`` reads it)::

    format: "glotok-bench/generator"   version: 1
    generator: {"name": registered name, "config": plain dict}
    context: {codebook_sizes, grid_size, channels, num_classes}
    tokens: provenance of the token set (tokenizer sha256, dataset, count, ...)
    architecture: {parameter name: shape}
    model: state_dict          ema: state_dict or None
    step: int                  train_config: plain dict
    training: optimiser, RNG and log state or None

A generator is rebuilt by name through the registry, so a checkpoint of a plugin's
generator loads wherever that plugin is installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from glotok_bench.atomic import atomic_torch_save
from glotok_bench.checkpoint_format import (
    architecture,
    architecture_mismatch,
    cpu_state,
    read_envelope,
)
from glotok_bench.errors import CheckpointError, GlotokError

FORMAT = "glotok-bench/generator"
VERSION = 1


def generator_class(name: str, registry: Any = None) -> type[nn.Module]:
    """The class registered as generator ``name`` (built-in presets are registered too)."""
    from glotok_bench.registry import get_registry

    return (registry or get_registry()).load("generator", name)


def build_generator(
    name: str, config: Any, context: Mapping[str, Any], registry: Any = None
) -> nn.Module:
    """``Cls(config, **context)``; ``config`` may be the ``Config`` instance or its plain dict."""
    from glotok_bench.config import structure

    cls = generator_class(name, registry)
    if isinstance(config, Mapping):
        config = structure(cls.Config, dict(config), source=f"generator {name!r}")
    return cls(config, **dict(context))


def save_generator_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    name: str,
    context: Mapping[str, Any],
    tokens: Mapping[str, Any] | None = None,
    ema: Mapping[str, torch.Tensor] | None = None,
    step: int = 0,
    train_config: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file next to ``path``, then rename)."""
    from glotok_bench.config import to_dict

    payload = {
        "format": FORMAT,
        "version": VERSION,
        "generator": {"name": name, "config": to_dict(model.config)},
        "context": _plain_context(context),
        "tokens": dict(tokens or {}),
        "architecture": architecture(model),
        "model": cpu_state(model.state_dict()),
        "ema": None if ema is None else cpu_state(ema),
        "step": int(step),
        "train_config": dict(train_config or {}),
        "training": training,
    }
    return atomic_torch_save(path, payload)


def _plain_context(context: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(context)
    out["codebook_sizes"] = {
        str(k): int(v) for k, v in dict(out.get("codebook_sizes") or {}).items()
    }
    out["grid_size"] = (
        list(out["grid_size"]) if not isinstance(out["grid_size"], int) else out["grid_size"]
    )
    return out


def read_generator_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check the outer format (tensors on CPU); raises :class:`CheckpointError`."""
    return read_envelope(
        path, kind="generator", format_tag=FORMAT, version=VERSION,
        required=("generator", "context", "architecture", "model"),
    )  # fmt: skip


def check_architecture(payload: Mapping[str, Any], model: nn.Module, source: str) -> None:
    """Raise :class:`CheckpointError` naming the first differences unless shapes all match."""
    mismatch = architecture_mismatch(payload["architecture"], architecture(model))
    if mismatch:
        raise CheckpointError(f"{source} does not fit the generator it describes: {mismatch}")


def load_generator(
    path: str | Path,
    *,
    weights: Literal["ema", "model"] = "ema",
    device: str | torch.device = "cpu",
    registry: Any = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a generator from a checkpoint -> (model in eval mode on ``device``, payload).

    ``weights="ema"`` uses the EMA weights when the checkpoint has them.
    """
    payload = read_generator_checkpoint(path)
    spec = payload["generator"]
    try:
        model = build_generator(spec["name"], spec["config"], payload["context"], registry)
    except GlotokError as exc:
        raise CheckpointError(f"{path}: cannot build the generator it describes: {exc}") from exc
    check_architecture(payload, model, str(path))
    state = (
        payload["ema"] if weights == "ema" and payload.get("ema") is not None else payload["model"]
    )
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), payload
