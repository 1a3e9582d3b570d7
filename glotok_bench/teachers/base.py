"""What every teacher source shares: build once, cache on disk, return unit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch

from glotok_bench.errors import ConfigError
from glotok_bench.interfaces import changed_options
from glotok_bench.teachers.cache import load_or_build, teacher_path


class CachedTeacher:
    """A teacher codebook source (component kind ``teacher``).

    Subclasses set ``source`` (the registered name), hold ``config`` and implement
    :meth:`spec` (what the codebook depends on; file hashes included) and
    :meth:`compute` (the codebook itself, any scale: it is normalised here).
    """

    source: str = ""
    # Teachers clustering features of images: their Config has ``data_root``, which the
    # pipeline points at the training images when it is empty.
    clusters_images: bool = False
    # Options saying where inputs live or only changing speed: not part of what a teacher
    # *is*, so they stay out of its leaderboard label.
    unlabelled_options = frozenset({"data_root", "weights_path", "path", "batch_size", "kmeans_batch_size"})

    def __init__(self, config: Any):
        self.config = config

    @classmethod
    def label(cls, config: Any) -> str:
        """e.g. ``patch-kmeans(clustering=per-class, k=252)``: the name plus every option that
        differs from its default, so different teachers never share a leaderboard row."""
        changed = cls._label_options(config)
        return f"{cls.source}({', '.join(changed)})" if changed else cls.source

    @classmethod
    def _label_options(cls, config: Any) -> list[str]:
        return changed_options(config, cls.unlabelled_options)

    @classmethod
    def with_data(cls, config: Any, image_root: Path | None) -> Any:
        """``config`` with ``data_root`` set to ``image_root`` when it clusters images and
        names no folder of its own."""
        if not cls.clusters_images or config.data_root:
            return config
        if image_root is None:
            raise ConfigError(f"teacher {cls.source!r} needs teacher.data_root (an image folder)")
        return attrs.evolve(config, data_root=str(image_root))

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
