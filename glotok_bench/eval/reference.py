"""FID reference statistics: computed once, cached under a key of everything behind them.

The key holds the dataset's manifest hash, split and preprocessing (resolution, crop,
resize filter), the extractor's name, weights hash and layer, the number of reference
images, how images become extractor input, the device type and arithmetic of the features
(fp32 with TF32 off, see ``extractors.full_fp32``), and the torch / torch-fidelity / numpy
versions (a new conv kernel can move features in the last digits). The file name is a
hash of that key, and the key itself is stored inside the file and compared on load, so
a changed dataset, crop, sample count or extractor can never pick up stale statistics.

Files are ``.npz`` with ``mu`` and ``sigma`` (float64), ``count`` and ``key`` (JSON): the
same ``mu``/``sigma`` layout as ADM's reference batches, which :func:`load_external_stats`
reads (e.g. ``VIRTUAL_imagenet256_labeled.npz`` for gFID). Loading never unpickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glotok_bench.atomic import atomic_write
from glotok_bench.errors import GlotokError
from glotok_bench.eval.extractors import FeatureExtractor
from glotok_bench.eval.stats import Gaussian

# 2: the key names the device type and arithmetic the features were computed with.
KEY_SCHEMA = "glotok-bench/fid-reference/2"
STATS_DIR_ENV = "GLOTOK_STATS_DIR"
# Protocol fields that name the exact image set, in order of preference.
MANIFEST_FIELDS = ("manifest_sha256", "files_sha256")
_PREPROCESSING_FIELDS = ("dataset", "split", "resolution", "crop", "resize_filter")


class ReferenceStatsError(GlotokError):
    """A reference-statistics file that cannot be read or does not fit the extractor."""


def default_stats_dir() -> Path:
    return Path(
        os.environ.get(STATS_DIR_ENV, Path.home() / ".cache" / "glotok_bench" / "fid-stats")
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def manifest_hash(data_protocol: Mapping[str, Any]) -> str | None:
    for field in MANIFEST_FIELDS:
        if data_protocol.get(field):
            return str(data_protocol[field])
    return None


def reference_key(
    data_protocol: Mapping[str, Any], extractor: FeatureExtractor, count: int
) -> dict[str, Any] | None:
    """The cache key (a JSON-able dict), or None when the data has no manifest hash:
    without one, nothing proves two runs saw the same images, so nothing is cached."""
    manifest = manifest_hash(data_protocol)
    if manifest is None:
        return None
    return {
        "schema": KEY_SCHEMA,
        "manifest_sha256": manifest,
        **{field: data_protocol.get(field) for field in _PREPROCESSING_FIELDS},
        "count": int(count),
        "extractor": extractor.name,
        "extractor_weights_sha256": extractor.weights_sha256,
        "feature_layer": extractor.layers["pool"],
        "extractor_input": extractor.protocol()["extractor_input"],
        **extractor.compute_setting(),
        "versions": {
            "torch": torch.__version__,
            "torch-fidelity": _version("torch-fidelity") if extractor.is_inception else None,
            "numpy": np.__version__,
        },
    }


def key_digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


class ReferenceCache:
    """``lookup(key) -> Gaussian | None`` and ``store(key, gaussian) -> Path`` in a folder."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_stats_dir()

    def path_for(self, key: Mapping[str, Any]) -> Path:
        readable = f"{key.get('dataset')}-{key.get('split')}-{key['count']}-{key['extractor']}"
        readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", readable)
        return self.root / f"{readable}-{key_digest(key)[:20]}.npz"

    def lookup(self, key: Mapping[str, Any]) -> Gaussian | None:
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            gaussian, stored_key = _read_npz(path)
        except ReferenceStatsError:
            return None  # a damaged cache entry is recomputed, not trusted
        if stored_key != json.loads(json.dumps(key, sort_keys=True)):
            return None  # a digest collision or a hand-edited file: recompute
        return gaussian

    def store(self, key: Mapping[str, Any], gaussian: Gaussian) -> Path:
        path = self.path_for(key)
        atomic_write(
            path,
            lambda handle: np.savez(
                handle,
                mu=gaussian.mu.double().numpy(),
                sigma=gaussian.sigma.double().numpy(),
                count=np.int64(gaussian.count),
                key=np.array(json.dumps(key, sort_keys=True)),
            ),
        )
        return path


def _read_npz(path: Path) -> tuple[Gaussian, dict[str, Any] | None]:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "mu" not in data or "sigma" not in data:
                raise ReferenceStatsError(
                    f"{path} has no 'mu' and 'sigma' arrays (found {', '.join(data.files)})"
                )
            mu = torch.from_numpy(np.asarray(data["mu"], dtype=np.float64).copy())
            sigma = torch.from_numpy(np.asarray(data["sigma"], dtype=np.float64).copy())
            count = int(data["count"]) if "count" in data else -1
            key = json.loads(str(data["key"])) if "key" in data else None
    except (OSError, ValueError, KeyError) as exc:
        raise ReferenceStatsError(f"reference statistics {path} cannot be read: {exc}") from exc
    if mu.ndim != 1 or tuple(sigma.shape) != (mu.shape[0], mu.shape[0]):
        raise ReferenceStatsError(
            f"{path}: mu {tuple(mu.shape)} and sigma {tuple(sigma.shape)} do not fit"
        )
    return Gaussian(mu, sigma, count), key


def load_external_stats(
    path: str | Path, extractor: FeatureExtractor
) -> tuple[Gaussian, dict[str, Any]]:
    """An external ``mu``/``sigma`` file (ADM reference batch, or one of ours) for ``extractor``.

    Returns the Gaussian and its provenance for the protocol. ADM's files hold Inception
    pool features; pairing one with another extractor is refused (the dimensions differ,
    and even if they did not, the distance would mean nothing).
    """
    path = Path(path)
    if not path.is_file():
        raise ReferenceStatsError(f"reference statistics file {path} does not exist")
    gaussian, key = _read_npz(path)
    if gaussian.dim != extractor.pool_dim:
        raise ReferenceStatsError(
            f"{path} holds {gaussian.dim}-d statistics but {extractor.name} gives {extractor.pool_dim}-d "
            "features: external references (e.g. ADM's) are Inception statistics and need the Inception file"
        )
    if key is not None and key.get("extractor") not in (None, extractor.name):
        raise ReferenceStatsError(
            f"{path} was computed with {key.get('extractor')}, not {extractor.name}"
        )
    from glotok_bench.weights import file_sha256

    digest = file_sha256(path)  # streamed: ADM's files also hold 10k images (GBs)
    provenance = {
        "reference": "external",
        "reference_file": path.name,
        "reference_sha256": digest,
        "reference_count": gaussian.count if gaussian.count > 0 else None,
    }
    return gaussian, provenance
