"""Teachers read from a file: any tensor by key, or a released tokenizer's codebook.

The released checkpoints store their codebooks un-normalised (the quantizers normalise
at use), so every codebook is l2-normalised before it becomes a teacher.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import attrs
import torch

from glotok_bench.errors import CheckpointError, ConfigError, MissingWeightsError
from glotok_bench.teachers.base import CachedTeacher
from glotok_bench.teachers.cache import file_digest
from glotok_bench.teachers.peer_files import read_tensor


class FileTeacher(CachedTeacher):
    """``file``: any 2-D tensor in a ``.safetensors`` or ``.pt`` file, by key."""

    source = "file"

    @attrs.frozen(kw_only=True)
    class Config:
        path: str = ""  # the checkpoint / tensor file
        key: str = "codebook"  # state-dict key of the codebook
        weights: Literal["model", "ema"] = "model"  # plain or EMA weights, if both are saved

    def _file(self) -> Path:
        if not self.config.path:
            raise ConfigError(
                f"teacher {self.source!r} needs `path`: the file holding the codebook"
            )
        return Path(self.config.path).expanduser()

    def spec(self, cache_dir: Path) -> dict[str, Any]:
        file = self._file()
        if not file.is_file():
            raise MissingWeightsError(
                f"teacher {self.source!r}: checkpoint {file} does not exist. Put the file "
                "there or set `path`; glotok-bench never downloads weights."
            )
        return {
            "source": self.source,
            "key": self.config.key,
            "weights": self.config.weights,
            "file_sha256": file_digest(file, cache_dir),
        }

    def compute(self, device: torch.device) -> torch.Tensor:
        file = self._file()
        codebook = read_tensor(file, self.config.key, weights=self.config.weights)
        if codebook.dim() != 2 or not codebook.is_floating_point():
            raise CheckpointError(
                f"{file}: {self.config.key!r} is a {codebook.dtype} tensor of shape "
                f"{list(codebook.shape)}, not a [k, d] float codebook"
            )
        return codebook.float()


class LlamaGenTeacher(FileTeacher):
    """``llamagen``: the VQ codebook of a LlamaGen tokenizer checkpoint ([16384, 8])."""

    source = "llamagen"

    @attrs.frozen(kw_only=True)
    class Config(FileTeacher.Config):
        key: str = "quantize.embedding.weight"


class FQGANTeacher(FileTeacher):
    """``fqgan``: the semantic codebook of an FQGAN dual-codebook checkpoint ([16384, 8])."""

    source = "fqgan"

    @attrs.frozen(kw_only=True)
    class Config(FileTeacher.Config):
        key: str = "quantize_sem.embedding.weight"


class ImageFolderTeacher(FileTeacher):
    """``imagefolder``: the semantic branch codebook of an ImageFolder checkpoint ([4096, 32])."""

    source = "imagefolder"

    @attrs.frozen(kw_only=True)
    class Config(FileTeacher.Config):
        key: str = "quantizes.1.embedding.weight"
