"""Device choice and mixed precision, decided in one place."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

import torch

DeviceName = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16"]


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        from glotok_bench.errors import ConfigError

        raise ConfigError(f"device {requested!r} was requested but CUDA is not available here")
    return device


def distributed_context(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, this rank's device). Under torchrun, joins the process group
    (NCCL on CUDA, gloo on CPU) and pins each rank to its LOCAL_RANK GPU."""
    import os

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world_size > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, device


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` means bf16 on a CUDA device that supports it, else fp32.

    CPU bf16 autocast is slower than fp32 on most CPUs, and autocast raises on GPUs
    without bf16 (pre-Ampere), so an explicit "bf16" there is a config error.
    """
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        from glotok_bench.errors import ConfigError

        raise ConfigError(
            f"precision = 'bf16' but {torch.cuda.get_device_name(device)} has no bf16 support; "
            "use 'auto' or 'fp32'"
        )
    return precision


def is_distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if is_distributed():
        import torch.distributed as dist

        dist.barrier()


def gather_from_ranks(value: Any) -> list[Any]:
    """``value`` of every rank, in rank order, on every rank (``[value]`` in one process)."""
    if not is_distributed():
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


@contextlib.contextmanager
def rank_zero_first() -> Iterator[None]:
    """Rank 0 runs the block before the other ranks do, so a cache it fills (a teacher
    codebook, a downloaded-once file) is found by the others instead of built N times."""
    import os

    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        barrier()
    yield
    if rank == 0:
        barrier()


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of this process on ``device``: CUDA allocator peak or CPU max RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def describe_device(device: torch.device) -> dict:
    info = {"type": device.type, "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info
