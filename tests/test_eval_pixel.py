"""PSNR and SSIM against scikit-image, on uint8 images, averaged per image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glotok_bench.eval.batch import EvalBatch
from glotok_bench.eval.pixel import PSNR, SSIM, psnr_per_image, ssim_per_image


def _photo_pairs(n: int = 4, size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops of a real photo and noisy, shifted versions of them (uint8 [n, 3, size, size])."""
    import skimage.data

    photo = skimage.data.astronaut()
    rng = np.random.default_rng(0)
    originals, distorted = [], []
    for i in range(n):
        crop = photo[40 * i : 40 * i + size, 60 * i : 60 * i + size].astype(np.float64)
        noisy = crop + rng.normal(0, 4 + 6 * i, crop.shape) + 3 * i
        originals.append(crop.astype(np.uint8))
        distorted.append(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    to_tensor = lambda images: torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return to_tensor(originals), to_tensor(distorted)


def test_psnr_and_ssim_agree_with_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    real, fake = _photo_pairs()
    psnr, ssim = psnr_per_image(real, fake), ssim_per_image(real, fake)
    for i in range(len(real)):
        a, b = real[i].permute(1, 2, 0).numpy(), fake[i].permute(1, 2, 0).numpy()
        assert float(psnr[i]) == pytest.approx(
            peak_signal_noise_ratio(a, b, data_range=255), rel=1e-12
        )
        assert float(ssim[i]) == pytest.approx(
            structural_similarity(a, b, channel_axis=2, data_range=255), abs=1e-10
        )
    assert len(set(psnr.tolist())) == len(real)  # the distortions differ, so must the scores


def _as_float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1.0


def test_metrics_average_per_image_scores_not_a_pooled_mse():
    real, fake = _photo_pairs()
    psnr, ssim = PSNR(data_protocol={"dataset": "astronaut-crops"}), SSIM()
    for lo, hi in ((0, 1), (1, 4)):  # uneven batches: a batch-mean-of-means would be wrong
        batch = EvalBatch(real=_as_float(real[lo:hi]), fake=_as_float(fake[lo:hi]))
        psnr.update(batch)
        ssim.update(batch)
    per_image = psnr_per_image(real, fake)
    result = psnr.compute()["psnr"]
    assert result["value"] == pytest.approx(float(per_image.mean()), rel=1e-12)
    pooled_mse = (real.double() - fake.double()).square().mean()
    assert result["value"] != pytest.approx(float(10 * torch.log10(255**2 / pooled_mse)), rel=1e-3)
    assert result["protocol"]["count"] == 4 and result["protocol"]["dataset"] == "astronaut-crops"
    assert ssim.compute()["ssim"]["value"] == pytest.approx(
        float(ssim_per_image(real, fake).mean()), rel=1e-12
    )


def test_float_images_are_scored_as_saved_uint8():
    real, _ = _photo_pairs(1)
    images = _as_float(real)
    nudged = images + 0.3 / 127.5  # under half a grey level: rounds back to the same uint8
    metric = PSNR()
    metric.update(EvalBatch(real=images, fake=nudged))
    assert metric.compute()["psnr"]["value"] == float("inf")


def test_pixel_metrics_refuse_float_input_and_tiny_images():
    with pytest.raises(TypeError):
        psnr_per_image(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="window"):
        ssim_per_image(
            torch.zeros(1, 3, 5, 5, dtype=torch.uint8), torch.zeros(1, 3, 5, 5, dtype=torch.uint8)
        )
