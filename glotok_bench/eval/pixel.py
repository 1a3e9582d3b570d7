"""PSNR and SSIM per image on uint8 images, averaged over images (the field's convention).

Both work on the images as they would be saved (uint8, data range 255), so a
reconstruction that is off by less than half a grey level counts as exact.

PSNR is LlamaGen/FQGAN's: scikit-image's ``peak_signal_noise_ratio`` per uint8 image
(10 log10(255^2 / MSE) in float64, +inf for an identical pair), then the mean over images.
It is the one PSNR in glotok-bench: ``reconstruct`` reports the same per-image values.

SSIM is scikit-image's ``structural_similarity`` with its defaults (7x7 uniform window,
K1 = 0.01, K2 = 0.03, sample covariances, per channel then averaged) and the *correct*
data range, 255. LlamaGen/FQGAN pass ``data_range=2.0`` for 0-255 inputs, which makes the
stabilising constants C1 and C2 about 16,000 times too small; their SSIM numbers are not
comparable to these.
Computed in torch (float64) so it runs on the evaluation device; the tests check it
against scikit-image.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from glotok_bench.eval.batch import EvalBatch
from glotok_bench.eval.options import PSNRConfig, SSIMConfig
from glotok_bench.eval.per_image import PerImageMean

DATA_RANGE = 255.0


def psnr_per_image(reference: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """uint8 images [B, 3, H, W] x2 -> PSNR in dB [B] (float64); inf where identical."""
    _check_uint8_pair(reference, test)
    diff = reference.double() - test.double()
    mse = diff.square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(DATA_RANGE**2 / mse)


def ssim_per_image(
    reference: torch.Tensor,
    test: torch.Tensor,
    *,
    window: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """uint8 images [B, C, H, W] x2 -> mean SSIM [B] (float64), scikit-image's definition."""
    _check_uint8_pair(reference, test)
    if min(reference.shape[-2:]) < window:
        raise ValueError(
            f"SSIM's {window}x{window} window does not fit {tuple(reference.shape[-2:])} images"
        )
    x, y = reference.double(), test.double()

    def local_mean(z: torch.Tensor) -> torch.Tensor:
        # "valid" positions only: scikit-image filters with reflection padding and then crops
        # (window - 1) / 2 pixels per side before averaging, leaving exactly these windows.
        return F.avg_pool2d(z, window, stride=1)

    mx, my = local_mean(x), local_mean(y)
    sample = window * window / (window * window - 1.0)  # unbiased local (co)variances
    vx = sample * (local_mean(x * x) - mx * mx)
    vy = sample * (local_mean(y * y) - my * my)
    vxy = sample * (local_mean(x * y) - mx * my)
    c1, c2 = (k1 * DATA_RANGE) ** 2, (k2 * DATA_RANGE) ** 2
    ssim_map = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return ssim_map.flatten(1).mean(dim=1)


def _check_uint8_pair(reference: torch.Tensor, test: torch.Tensor) -> None:
    if reference.dtype != torch.uint8 or test.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {reference.dtype} and {test.dtype}")
    if reference.shape != test.shape or reference.ndim != 4:
        raise ValueError(
            f"expected two [B, C, H, W] images of one shape, got {tuple(reference.shape)}, {tuple(test.shape)}"
        )


class PSNR(PerImageMean):
    """Mean per-image PSNR (dB) of ``fake`` against ``real``. Context: ``data_protocol``."""

    name = "psnr"

    Config = PSNRConfig  # torch-free, in eval/options.py, so run configs load fast

    def scores(self, batch: EvalBatch) -> torch.Tensor:
        return psnr_per_image(batch.uint8("real"), batch.uint8("fake"))

    def describe(self) -> dict[str, Any]:
        return {
            "images": "uint8",
            "data_range": DATA_RANGE,
            "definition": "10 log10(255^2 / MSE) per image",
        }


class SSIM(PerImageMean):
    """Mean per-image SSIM of ``fake`` against ``real``. Context: ``data_protocol``."""

    name = "ssim"

    Config = SSIMConfig

    def scores(self, batch: EvalBatch) -> torch.Tensor:
        return ssim_per_image(batch.uint8("real"), batch.uint8("fake"), window=self.config.window)

    def describe(self) -> dict[str, Any]:
        return {
            "images": "uint8",
            "data_range": DATA_RANGE,
            "definition": f"scikit-image structural_similarity: {self.config.window}x{self.config.window} "
            "uniform window, K1=0.01, K2=0.03, sample covariance, channels averaged",
        }
