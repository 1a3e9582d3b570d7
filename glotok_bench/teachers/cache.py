"""Teacher codebooks are built once and kept on disk, keyed by what determines them.

A teacher's *spec* is a JSON-able dict of everything its codebook depends on (source
name, options, sha256 of the weights file, dataset manifest digest, seed, ...). The
cache file is ``<cache_dir>/teachers/<source>-<sha256(spec)[:16]>.safetensors`` holding
the l2-normalised codebook under ``"codebook"`` and the spec in its metadata, so a file
can be traced back to how it was made and is also usable directly as a
``teacher_file`` of the histogram supervision.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from glotok_bench.atomic import atomic_path, atomic_write_text
from glotok_bench.errors import CheckpointError

CODEBOOK_KEY = "codebook"
_DIGESTS_FILE = "file-digests.json"


def spec_digest(spec: Mapping[str, Any]) -> str:
    """sha256 of the spec's canonical JSON."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def teacher_path(cache_dir: str | Path, source: str, spec: Mapping[str, Any]) -> Path:
    """Where the codebook for ``spec`` is (or will be) cached."""
    return Path(cache_dir) / "teachers" / f"{source}-{spec_digest(spec)[:16]}.safetensors"


def load_or_build(
    cache_dir: str | Path,
    source: str,
    spec: Mapping[str, Any],
    build: Callable[[], torch.Tensor],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The cached codebook for ``spec``, or ``build()`` it, normalise and cache it.

    Returns float32 ``[k, d]`` with l2-normalised rows, on ``device``.
    """
    path = teacher_path(cache_dir, source, spec)
    if path.is_file():
        return read_cached_codebook(path).to(device)
    codebook = build().detach().float()
    if codebook.dim() != 2 or codebook.shape[0] < 2:
        raise CheckpointError(
            f"teacher {source!r} produced shape {tuple(codebook.shape)}; expected [k >= 2, d]"
        )
    codebook = F.normalize(codebook, dim=1).cpu().contiguous()
    from safetensors.torch import save_file

    metadata = {"source": source, "spec": json.dumps(dict(spec), sort_keys=True, default=str)}
    with atomic_path(path) as tmp:
        save_file({CODEBOOK_KEY: codebook}, str(tmp), metadata=metadata)
    return codebook.to(device)


def read_cached_codebook(path: str | Path) -> torch.Tensor:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    if CODEBOOK_KEY not in tensors:
        raise CheckpointError(f"{path} is not a teacher cache file: no {CODEBOOK_KEY!r} tensor")
    return tensors[CODEBOOK_KEY]


def file_digest(path: str | Path, cache_dir: str | Path) -> str:
    """sha256 of a file's bytes, remembered per (path, size, mtime) in ``cache_dir``.

    Weight files are gigabytes; hashing one on every cache lookup would cost seconds,
    so the digest is recomputed only when the file's size or modification time changes.
    """
    from glotok_bench.weights import file_sha256

    path = Path(path).expanduser().resolve()
    stat = path.stat()
    stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    digests_path = Path(cache_dir) / _DIGESTS_FILE
    digests = _read_json(digests_path)
    entry = digests.get(str(path))
    if entry and entry.get("stamp") == stamp:
        return entry["sha256"]
    digest = file_sha256(path)
    digests = _read_json(digests_path)  # another process may have added entries meanwhile
    digests[str(path)] = {"stamp": stamp, "sha256": digest}
    atomic_write_text(digests_path, json.dumps(digests, indent=1, sort_keys=True))
    return digest


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
