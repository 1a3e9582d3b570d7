"""Capture and restore every random-number generator a training step may touch.

States are stored as tensors and plain Python data so checkpoints load with
``torch.load(weights_only=True)``. Under data parallel every rank has its own stream
(generators seed ``seed + rank``; dropout and noise differ per rank), so a checkpoint
holds one state per rank, in rank order (:func:`gather_rng_states`).
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def capture_rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """This process's RNG states; on CUDA only ``device``'s generator (a rank owns one GPU,
    and a state per visible GPU would not restore where fewer GPUs are visible)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = None
    if device is not None and device.type == "cuda":
        cuda = torch.cuda.get_rng_state(device)
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": cuda,
    }


def restore_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if device is None or device.type != "cuda" or cuda is None:
        return  # a CPU resume of a GPU run keeps the CPU streams exact, nothing else to set
    if isinstance(cuda, list):  # checkpoints before per-rank states: one state per visible GPU
        index = device.index or 0
        if index >= len(cuda):
            return
        cuda = cuda[index]
    torch.cuda.set_rng_state(cuda, device)


def gather_rng_states(device: torch.device) -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (collective: all ranks must call it)."""
    from glotok_bench.device import gather_from_ranks

    return gather_from_ranks(capture_rng_state(device))


def restore_rank_rng(
    saved: list[dict[str, Any]] | dict[str, Any],
    *,
    rank: int,
    world_size: int,
    device: torch.device,
    reseed: int,
    source: str,
) -> bool:
    """Restore this rank's state from a checkpoint's per-rank list; True when exact.

    Resuming on another number of ranks cannot be exact (each rank's slice of the batch
    changes too), so every rank is re-seeded from ``reseed + rank`` and the run goes on,
    with a warning.
    """
    states = [saved] if isinstance(saved, dict) else list(saved)  # older: one shared state
    if len(states) == world_size:
        restore_rng_state(states[rank], device)
        return True
    warnings.warn(
        f"{source} was written by {len(states)} rank(s) and is resumed on {world_size}: "
        "random streams are re-seeded, so the run continues but is not bit-identical to an "
        "uninterrupted one",
        stacklevel=3,
    )
    seed_everything(reseed + rank)
    return False
