"""A teacher whose codes are uniform on the unit sphere: relations without semantics."""

from __future__ import annotations

from pathlib import Path

import attrs

from glotok_bench.hookspecs import hookimpl
from glotok_bench.registry import Component


class UniformSphereTeacher:
    @attrs.frozen(kw_only=True)
    class Config:
        size: int = 4096
        dim: int = 8
        seed: int = 0

    def __init__(self, config: Config):
        self.config = config

    def build(self, cache_dir: Path, device: str = "cpu"):
        import torch

        generator = torch.Generator().manual_seed(self.config.seed)
        codes = torch.randn(self.config.size, self.config.dim, generator=generator)
        return torch.nn.functional.normalize(codes, dim=1).to(device)


@hookimpl
def glotok_teachers() -> list[Component]:
    return [Component("uniform-sphere", f"{__name__}:UniformSphereTeacher",
                      "codes uniform on the unit sphere (example plugin)")]
