"""FID and Inception Score as metric plugins: streaming, mergeable, and labelled.

Both run a :class:`~glotok_bench.eval.extractors.FeatureExtractor` on uint8 images and keep
only sufficient statistics. Their result names come from
:func:`~glotok_bench.eval.extractors.metric_name`: ``rfid``/``gfid``/``is`` on the FID
Inception graph, ``rfid@standin-randconv-v1`` etc. on anything else.

FID's reference side comes from, in order: an external ``mu``/``sigma`` file
(``reference_stats``, e.g. ADM's for gFID), the reference cache (a hit means the real
images are never run through the extractor), or the ``real`` images of the batches it
sees, whose statistics are then stored in the cache for the next evaluation.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch

from glotok_bench.eval.batch import EvalBatch
from glotok_bench.eval.extractors import FeatureExtractor, build_extractor, metric_name
from glotok_bench.eval.frechet import gaussian_frechet_distance
from glotok_bench.eval.inception_score import InceptionScoreAccumulator
from glotok_bench.eval.options import FrechetDistanceConfig, InceptionScoreConfig
from glotok_bench.eval.reference import (
    ReferenceCache,
    key_digest,
    load_external_stats,
    reference_key,
)
from glotok_bench.eval.stats import Gaussian, MomentAccumulator
from glotok_bench.records import metric


def _extractor_for(config: Any, device: torch.device | str) -> FeatureExtractor:
    return build_extractor(
        config.extractor, inception_weights=config.inception_weights or None, device=device
    )


class FrechetDistance:
    """FID between the ``fake`` images and a reference (cached, external, or the ``real`` images).

    Context: ``device``; ``data_protocol`` (the dataset's ``protocol()``: it keys the
    reference cache and is copied into the result).
    """

    Config = FrechetDistanceConfig  # torch-free, in eval/options.py, so run configs load fast

    def __init__(
        self,
        config: Config | None = None,
        *,
        device: torch.device | str = "cpu",
        data_protocol: Mapping[str, Any] | None = None,
        **_: Any,
    ):
        self.config = config or self.Config()
        self.data_protocol = dict(data_protocol or {})
        self.extractor = _extractor_for(self.config, device)
        self.fake = MomentAccumulator(self.extractor.pool_dim, device)
        self.real: MomentAccumulator | None = None
        self.reference: Gaussian | None = None
        self.reference_info: dict[str, Any] = {}
        self.cache = ReferenceCache(self.config.cache_dir or None)
        self.key: dict[str, Any] | None = None
        if self.config.reference_stats:
            self.reference, self.reference_info = load_external_stats(
                self.config.reference_stats, self.extractor
            )
            return
        count = self.data_protocol.get("count")
        if self.config.cache and count:
            self.key = reference_key(self.data_protocol, self.extractor, int(count))
        if self.key is not None:
            self.reference = self.cache.lookup(self.key)
        if self.reference is not None:
            self.reference_info = {
                "reference": "cache",
                "reference_file": self.cache.path_for(self.key).name,
                "reference_count": self.reference.count,
            }
        else:
            self.real = MomentAccumulator(self.extractor.pool_dim, device)

    @property
    def needs_real(self) -> bool:
        """Whether ``update`` wants ``real`` images (False once a reference is cached/external)."""
        return self.reference is None

    def update(self, batch: EvalBatch) -> None:
        if batch.fake is not None:
            self.fake.update(batch.features(self.extractor, "fake")["pool"])
        if self.real is not None and batch.real is not None:
            self.real.update(batch.features(self.extractor, "real")["pool"])

    def merge(self, other: FrechetDistance) -> FrechetDistance:
        self.fake.merge(other.fake)
        if self.real is not None and other.real is not None:
            self.real.merge(other.real)
        return self

    def _reference(self) -> Gaussian:
        if self.reference is not None:
            return self.reference
        if self.real is None or self.real.n < 2:
            raise ValueError(
                f"{self.config.label}: no reference: give real images, or reference_stats for an external file"
            )
        gaussian = self.real.compute()
        self.reference_info = {"reference": "computed", "reference_count": gaussian.count}
        if self.key is not None:
            if gaussian.count == self.key["count"]:
                path = self.cache.store(self.key, gaussian)
                self.reference_info["reference_file"] = path.name
            else:
                # Unreadable images were skipped: these statistics are not the keyed set's.
                warnings.warn(
                    f"{self.config.label}: reference saw {gaussian.count} of {self.key['count']} images; "
                    "not caching its statistics",
                    stacklevel=2,
                )
        return gaussian

    def compute(self) -> dict[str, dict[str, Any]]:
        reference = self._reference()
        fake = self.fake.compute()
        value = gaussian_frechet_distance(fake, reference)
        protocol = {
            **self.data_protocol,
            **self.extractor.protocol(),
            **self.reference_info,
            "count": fake.count,
            "feature_statistics": "streaming float64 mean and covariance (ddof=1)",
        }
        if self.key is not None:
            protocol["reference_key_sha256"] = key_digest(self.key)
        return {metric_name(self.config.label, self.extractor): metric(value, protocol)}


class InceptionScore:
    """Inception Score of the ``fake`` images (streamed per split; see inception_score.py).

    Context: ``device``; ``data_protocol`` (copied into the result).
    """

    Config = InceptionScoreConfig

    def __init__(
        self,
        config: Config | None = None,
        *,
        device: torch.device | str = "cpu",
        data_protocol: Mapping[str, Any] | None = None,
        **_: Any,
    ):
        self.config = config or self.Config()
        self.data_protocol = dict(data_protocol or {})
        self.extractor = _extractor_for(self.config, device)
        self.state: InceptionScoreAccumulator | None = None
        self.device = device

    def update(self, batch: EvalBatch) -> None:
        if batch.fake is None:
            return
        logits = batch.features(self.extractor, "fake")["logits"]
        if self.state is None:
            self.state = InceptionScoreAccumulator(logits.shape[1], self.config.splits, self.device)
        self.state.update(logits, batch.sample_ids)

    def merge(self, other: InceptionScore) -> InceptionScore:
        if other.state is not None:
            self.state = other.state if self.state is None else self.state.merge(other.state)
        return self

    def compute(self) -> dict[str, dict[str, Any]]:
        if self.state is None:
            raise ValueError(f"{self.config.label}: no images were given")
        value = self.state.compute()
        protocol = {
            **self.data_protocol,
            **self.extractor.protocol(),
            "count": value.count,
            "splits": value.splits,
            "split_assignment": "dataset index modulo splits",
        }
        label = self.config.label
        return {
            metric_name(label, self.extractor): metric(value.mean, protocol),
            metric_name(f"{label}_std", self.extractor): metric(value.std, protocol),
        }
