"""What one evaluation step hands every metric: ``metric.update(batch)``.

A single argument type keeps the metric plugins interchangeable: each reads the fields
it needs and ignores the rest. Extractor features are memoised per batch, so FID and IS
on the same extractor run Inception once per image, not once per metric.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from glotok_bench.eval.extractors import FeatureExtractor

SIDES = ("real", "fake")


class Metric(Protocol):
    """What every metric plugin provides. Built as ``Metric(config, **context)``; the
    evaluation context is ``device``, ``data_protocol`` and ``codebook_sizes`` and each
    metric takes the keys it needs. ``compute`` maps result names to
    ``{"value": float, "protocol": dict}``."""

    def update(self, batch: EvalBatch) -> None: ...

    def merge(self, other: Any) -> Any: ...

    def compute(self) -> dict[str, dict[str, Any]]: ...


class EvalBatch:
    """One batch of an evaluation.

    - ``real``: reference images [B, 3, H, W] in [-1, 1] (the dataset), or None
    - ``fake``: images under test [B, 3, H, W] in [-1, 1] (reconstructions, or generated
      samples for gFID/IS), or None
    - ``encoding``: the tokenizer's ``encode`` output for ``real`` (``.indices``,
      ``.quantized``, ``.branches``), or None
    - ``sample_ids``: LongTensor [B], the images' indices in the dataset, or None
    """

    def __init__(
        self,
        *,
        real: torch.Tensor | None = None,
        fake: torch.Tensor | None = None,
        encoding: Any = None,
        sample_ids: torch.Tensor | None = None,
    ):
        for side, images in (("real", real), ("fake", fake)):
            if images is not None and (images.ndim != 4 or images.shape[1] != 3):
                raise ValueError(f"{side} images must be [B, 3, H, W], got {tuple(images.shape)}")
        if real is not None and fake is not None and real.shape != fake.shape:
            raise ValueError(
                f"real {tuple(real.shape)} and fake {tuple(fake.shape)} images differ in shape"
            )
        self.real, self.fake, self.encoding, self.sample_ids = real, fake, encoding, sample_ids
        self._uint8: dict[str, torch.Tensor] = {}
        self._features: dict[tuple[int, str], dict[str, torch.Tensor]] = {}

    def images(self, side: str) -> torch.Tensor:
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        images = self.real if side == "real" else self.fake
        if images is None:
            raise ValueError(f"this batch has no {side} images")
        return images

    def uint8(self, side: str) -> torch.Tensor:
        """The ``side`` images as uint8 [B, 3, H, W], rounded the way saving a PNG would."""
        if side not in self._uint8:
            from glotok_bench.data.preprocess import to_uint8

            self._uint8[side] = to_uint8(self.images(side))
        return self._uint8[side]

    def features(self, extractor: FeatureExtractor, side: str) -> dict[str, torch.Tensor]:
        """``extractor``'s {"pool": [B, d], "logits": [B, k]} for ``side``, computed once per batch."""
        key = (id(extractor), side)
        if key not in self._features:
            self._features[key] = extractor(self.uint8(side))
        return self._features[key]

    def __len__(self) -> int:
        for images in (self.real, self.fake):
            if images is not None:
                return int(images.shape[0])
        return 0
