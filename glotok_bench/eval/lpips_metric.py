"""LPIPS (VGG) as a metric, when its two weight files are on disk.

Uses the harness's frozen LPIPS network (:mod:`glotok_bench.tokenizer.perceptual`, the one
the perceptual loss uses). The constructor raises :class:`MissingWeightsError` when a file
is missing; the evaluator treats LPIPS as optional and records why it was skipped.
Images are scored as saved (uint8, mapped back to [-1, 1]) like PSNR and SSIM.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from glotok_bench.eval.batch import EvalBatch
from glotok_bench.eval.options import LPIPSConfig
from glotok_bench.eval.per_image import PerImageMean


class LPIPSMetric(PerImageMean):
    """Mean per-image LPIPS-VGG of ``fake`` against ``real``. Context: ``device``, ``data_protocol``."""

    name = "lpips"

    Config = LPIPSConfig  # torch-free, in eval/options.py, so run configs load fast

    def __init__(
        self,
        config: Config | None = None,
        *,
        device: torch.device | str = "cpu",
        data_protocol: Mapping[str, Any] | None = None,
        **_: Any,
    ):
        super().__init__(config, data_protocol=data_protocol)
        from glotok_bench.tokenizer.perceptual import LPIPS
        from glotok_bench.weights import file_sha256, resolve_weights

        vgg = resolve_weights("vgg16", self.config.vgg_weights or None)
        lin = resolve_weights("lpips-vgg", self.config.lin_weights or None)
        self.network = LPIPS(vgg, lin).to(device)
        self.files = {
            "vgg16": (vgg.name, file_sha256(vgg)),
            "lpips-vgg": (lin.name, file_sha256(lin)),
        }

    def scores(self, batch: EvalBatch) -> torch.Tensor:
        device = next(self.network.parameters()).device
        real = batch.uint8("real").to(device).float().div(127.5).sub(1.0)
        fake = batch.uint8("fake").to(device).float().div(127.5).sub(1.0)
        with torch.inference_mode():
            return self.network(real, fake)

    def describe(self) -> dict[str, Any]:
        return {
            "images": "uint8 mapped to [-1, 1]",
            "network": "LPIPS v0.1, VGG16 backbone",
            "weights": {
                name: {"file": file, "sha256": digest}
                for name, (file, digest) in self.files.items()
            },
        }
