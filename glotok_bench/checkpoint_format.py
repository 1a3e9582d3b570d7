"""What glotok-bench's own checkpoints (tokenizer, generator) share: a tagged envelope read
without running code, and the parameter-shape fingerprint a checkpoint must match to load."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from glotok_bench.errors import CheckpointError
from glotok_bench.safe_load import torch_load_weights_only


def architecture(module: torch.nn.Module) -> dict[str, list[int]]:
    """{state-dict key: shape} of a module: what a checkpoint must match to load into it."""
    return {name: list(t.shape) for name, t in module.state_dict().items()}


def cpu_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached CPU copies, so a saved checkpoint does not alias live training tensors."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def read_envelope(
    path: str | Path, *, kind: str, format_tag: str, version: int, required: Iterable[str], hint: str = ""
) -> dict[str, Any]:
    """Load a ``kind`` checkpoint and check its format tag, version and required entries."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{kind} checkpoint {path} does not exist")
    payload = torch_load_weights_only(path, what=f"{kind} checkpoint")
    return check_envelope(
        payload, path, kind=kind, format_tag=format_tag, version=version, required=required, hint=hint
    )


def check_envelope(
    payload: Any, path: str | Path, *, kind: str, format_tag: str, version: int, required: Iterable[str],
    hint: str = "",
) -> dict[str, Any]:
    """:func:`read_envelope`'s checks on an already loaded payload."""
    if not isinstance(payload, dict) or payload.get("format") != format_tag:
        found = f"top-level keys: {sorted(payload)[:8]}" if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path} is not a glotok-bench {kind} checkpoint (expected format {format_tag!r}; {found}).{hint}"
        )
    if payload.get("version") != version:
        raise CheckpointError(f"{path}: {kind} checkpoint version {payload.get('version')} is not supported ({version})")
    for key in required:
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"{path}: {kind} checkpoint entry {key!r} is missing or malformed")
    _check_weights_match_architecture(payload, path, kind)
    return payload


WEIGHT_ENTRIES = ("model", "ema")


def _check_weights_match_architecture(payload: Mapping[str, Any], path: str | Path, kind: str) -> None:
    """The stored weights must be what the recorded fingerprint says, or the loaders' check
    of fingerprint against model passes and ``load_state_dict`` fails with a traceback."""
    recorded = payload.get("architecture")
    if not isinstance(recorded, Mapping):
        return
    expected = {key: list(shape) for key, shape in recorded.items()}
    for entry in WEIGHT_ENTRIES:
        weights = payload.get(entry)
        if not isinstance(weights, Mapping):
            continue
        shapes = {key: list(getattr(value, "shape", [None])) for key, value in weights.items()}
        mismatch = architecture_mismatch(shapes, expected)
        if mismatch:
            raise CheckpointError(
                f"{path}: the {kind} checkpoint's {entry!r} weights do not match its recorded "
                f"architecture (damaged or edited file): {mismatch}"
            )


def architecture_mismatch(saved: Mapping[str, Any], expected: Mapping[str, list[int]]) -> str:
    """The first differences between two fingerprints, or "" when they match."""
    problems = [f"missing {k}" for k in expected if k not in saved]
    problems += [f"unexpected {k}" for k in saved if k not in expected]
    problems += [
        f"{k}: checkpoint {list(saved[k])} vs model {shape}"
        for k, shape in expected.items()
        if k in saved and list(saved[k]) != shape
    ]
    more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    return "; ".join(problems[:5]) + more
