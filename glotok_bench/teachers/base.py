"""What every teacher source shares: build once, cache on disk, return unit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch

from glotok_bench.teachers.cache import load_or_build, teacher_path


class CachedTeacher:
    """A teacher codebook source (component kind ``teacher``).

    Subclasses set ``source`` (the registered name), hold ``config`` and implement
    :meth:`spec` (what the codebook depends on; file hashes included) and
    :meth:`compute` (the codebook itself, any scale: it is normalised here).
    """

    source: str = ""

    def __init__(self, config: Any):
        self.config = config

    def spec(self, cache_dir: Path) -> dict[str, Any]:
        raise NotImplementedError

    def compute(self, device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def build(self, cache_dir: str | Path, device: torch.device | str = "cpu") -> torch.Tensor:
        """The l2-normalised teacher codebook, float32 ``[k, d]`` on ``device``.

        Computed on the first call for a given spec and read from ``cache_dir`` after.
        """
        device = torch.device(device)
        cache_dir = Path(cache_dir)
        return load_or_build(
            cache_dir, self.source, self.spec(cache_dir), lambda: self.compute(device), device
        )

    def cache_file(self, cache_dir: str | Path) -> Path:
        """The file :meth:`build` reads or writes (a valid histogram ``teacher_file``)."""
        cache_dir = Path(cache_dir)
        return teacher_path(cache_dir, self.source, self.spec(cache_dir))

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, **attrs.asdict(self.config)}
