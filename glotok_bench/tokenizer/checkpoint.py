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

:func:`load_tokenizer` also reads other projects' checkpoints (LlamaGen, FQGAN-Dual, and
any format a plugin registers; see :mod:`glotok_bench.tokenizer.peers`), so every command
that takes a tokenizer checkpoint takes those too.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from glotok_bench.atomic import atomic_torch_save
from glotok_bench.checkpoint_format import (
    architecture,
    architecture_mismatch,
    check_envelope,
    cpu_state,
    read_envelope,
)
from glotok_bench.config import to_dict
from glotok_bench.errors import CheckpointError, GlotokError
from glotok_bench.registry import Registry, get_registry
from glotok_bench.safe_load import torch_load_weights_only
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
        hint=" (Peer checkpoints - LlamaGen, FQGAN - are read by load_tokenizer, not here.)",
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


FORMATS_KIND = "tokenizer_format"
OWN_FORMAT = "glotok"


def load_tokenizer(
    path: str | Path,
    *,
    config: TokenizerConfig | None = None,
    weights: Literal["ema", "model"] = "ema",
    device: str | torch.device = "cpu",
    registry: Registry | None = None,
    format: str = "auto",  # noqa: A002 - the user-facing name
) -> tuple[Tokenizer, dict[str, Any]]:
    """Rebuild a tokenizer from a checkpoint -> (tokenizer in eval mode, payload).

    ``format``: ``"auto"`` (ours, else the one registered peer format whose ``detect``
    accepts the weights), ``"glotok"`` or a ``tokenizer_format`` name (``llamagen``,
    ``fqgan-dual``). ``config``: build this architecture and check the checkpoint fits it
    (default: the one stored in, or read from, the checkpoint). ``weights="ema"`` uses the
    EMA weights when the file has them. A peer checkpoint's payload is
    :func:`peer_payload`'s summary, with ``tokenizer_config`` like ours.
    """
    path = Path(path)
    return _tokenizer_from(_read_file(path), path, config, weights, device, registry, format)


def _tokenizer_from(raw, path, config, weights, device, registry, format):  # noqa: A002
    if format == OWN_FORMAT or (format == "auto" and _is_own(raw)):
        return _load_own(_check_own(raw, path), path, config, weights, device, registry)
    state, args, step = unwrap_peer_checkpoint(raw, path, weights)
    registry = registry or get_registry()
    name, peer = _peer_format(state, path, format, registry)
    try:
        tokenizer = peer.build(state, args, source=str(path), registry=registry)
    except GlotokError as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: cannot build the {name} tokenizer it holds: {exc}") from exc
    if config is not None:
        mismatch = architecture_mismatch(architecture(tokenizer), architecture(Tokenizer(config, registry=registry)))
        if mismatch:
            raise CheckpointError(f"{path} ({name}) does not fit the configured tokenizer: {mismatch}")
    payload = peer_payload(path, name, peer.family, tokenizer, step)
    payload["ema"] = raw.get("ema") if isinstance(raw, dict) and isinstance(raw.get("ema"), dict) else None
    return tokenizer.to(device).eval(), payload


def open_tokenizer(
    path: str | Path,
    *,
    format: str = "auto",  # noqa: A002
    weights: Literal["ema", "model"] = "model",
    device: str | torch.device = "cpu",
) -> Tokenizer:
    """``glotok_bench.load_tokenizer``: any supported tokenizer checkpoint -> a tokenizer in
    eval mode (``tok(images).reconstruction``, ``encode``, ``decode_indices``)."""
    return load_tokenizer(path, format=format, weights=weights, device=device)[0]


def _read_file(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"tokenizer checkpoint {path} does not exist")
    return torch_load_weights_only(path, what="tokenizer checkpoint")


def _is_own(raw: Any) -> bool:
    return isinstance(raw, dict) and raw.get("format") == FORMAT


def _check_own(raw: Any, path: Path) -> dict[str, Any]:
    return check_envelope(
        raw, path, kind="tokenizer", format_tag=FORMAT, version=VERSION,
        required=("tokenizer_config", "architecture", "model"),
    )  # fmt: skip


def _load_own(payload, path, config, weights, device, registry) -> tuple[Tokenizer, dict[str, Any]]:
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


def unwrap_peer_checkpoint(raw: Any, path: Path, weights: str) -> tuple[dict, dict[str, Any], int | None]:
    """A peer file -> (model state dict, saved args as a dict, training step).

    LlamaGen's and FQGAN's training scripts save ``{"model", "optimizer", "discriminator",
    "optimizer_disc", "steps", "args"(, "ema")}``; a bare state dict is accepted too.
    """
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        use_ema = weights == "ema" and isinstance(raw.get("ema"), dict)
        state, args, step = raw["ema" if use_ema else "model"], raw.get("args"), raw.get("steps")
    elif isinstance(raw, dict) and raw and all(torch.is_tensor(v) for v in raw.values()):
        state, args, step = raw, None, None
    else:
        found = f"top-level keys {sorted(map(str, raw))[:8]}" if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(
            f"{path} is neither a glotok-bench tokenizer checkpoint nor a peer one "
            f"(a state dict, or a dict with 'model'); {found}"
        )
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    if args is not None and not isinstance(args, dict):
        raise CheckpointError(f"{path}: 'args' is a {type(args).__name__}, expected a Namespace or dict")
    bad = [k for k, v in state.items() if not torch.is_tensor(v)][:3]
    if bad:
        raise CheckpointError(f"{path}: the model state dict has non-tensor entries {bad}")
    return state, dict(args or {}), step if isinstance(step, int) else None


def _peer_format(state: dict, path: Path, format: str, registry: Registry) -> tuple[str, Any]:  # noqa: A002
    names = registry.names(FORMATS_KIND)
    if format != "auto":
        if format not in names:
            raise CheckpointError(
                f"{path}: unknown tokenizer format {format!r}; formats: {', '.join([OWN_FORMAT, *names])}"
            )
        return format, registry.create(FORMATS_KIND, format)
    matches = [(n, f) for n in names if (f := registry.create(FORMATS_KIND, n)).detect(state)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CheckpointError(
            f"{path} is not a glotok-bench tokenizer checkpoint and matches no registered peer "
            f"format ({', '.join(names) or 'none'}); "
            f"its first keys: {sorted(state)[:6]}"
        )
    raise CheckpointError(f"{path} matches several formats {[n for n, _ in matches]}; pass format=")


def peer_payload(path: Path, name: str, family: str, tokenizer: Tokenizer, step: int | None) -> dict[str, Any]:
    """What a loaded peer checkpoint reports: its format, family, sha256 and derived config
    (and, like ours, ``ema``: the file's EMA weights or None)."""
    from glotok_bench.weights import file_sha256

    return {
        "format": name,
        "family": family,
        "sha256": file_sha256(path),
        "step": step,
        "tokenizer_config": to_dict(tokenizer.config),
    }
