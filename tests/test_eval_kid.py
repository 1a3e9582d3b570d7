"""KID against torch-fidelity, per-image evidence files, and TF32 kept out of features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_eval_fidelity import _noisy, _photo_crops, _stream, _Uint8Images

from glotok_bench.eval.batch import EvalBatch
from glotok_bench.eval.extractors import build_extractor, register_standin_with_torch_fidelity
from glotok_bench.eval.kid import KernelDistance
from glotok_bench.eval.pixel import PSNR, psnr_per_image
from glotok_bench.eval.reference import reference_key
from glotok_bench.eval.standin import STANDIN_NAME

KID = f"rkid@{STANDIN_NAME}"


def _kid(real, fake, **config):
    config.setdefault("extractor", "standin")
    return _stream(KernelDistance(KernelDistance.Config(**config)), real, fake)


@pytest.mark.parametrize("subset_size", [50, 64])  # a subset smaller than, and as large as, the set
def test_kid_equals_torch_fidelity_on_the_same_network(subset_size):
    import torch_fidelity

    real, fake = _photo_crops(64, seed=2), _noisy(_photo_crops(64, seed=3), 0.1)
    expected = torch_fidelity.calculate_metrics(
        input1=_Uint8Images(fake), input2=_Uint8Images(real), kid=True, kid_subsets=20,
        kid_subset_size=subset_size, feature_extractor=register_standin_with_torch_fidelity(),
        cuda=False, cache=False, save_cpu_ram=True, verbose=False, batch_size=16,
    )  # fmt: skip
    ours = _kid(real, fake, subsets=20, subset_size=subset_size)
    # torch-fidelity sums float32 kernels; ours are float64.
    assert ours[KID]["value"] == pytest.approx(expected["kernel_inception_distance_mean"], rel=1e-4)
    # With subsets as large as the set every subset holds the same images: a std of float32
    # rounding noise there (~1e-7), exactly 0 here.
    assert ours[f"rkid_std@{STANDIN_NAME}"]["value"] == pytest.approx(
        expected["kernel_inception_distance_std"], rel=1e-3, abs=1e-6)
    assert ours[KID]["protocol"]["subset_size"] == subset_size


def test_kid_is_unbiased_near_zero_for_one_distribution_and_grows_with_noise():
    images = _photo_crops(96, seed=4)
    same = _kid(images[:48], images[48:], subsets=10, subset_size=48)[KID]["value"]
    noisy = [_kid(images, _noisy(images, s), subsets=10, subset_size=64)[KID]["value"] for s in (0.6, 1.0)]
    # Unbiased: two halves of one set score about 0 (either sign), not a small-n offset.
    assert noisy[0] < noisy[1] and abs(same) < noisy[1]


def test_kid_does_not_depend_on_batch_order_and_caps_the_subset_at_the_set_size(tmp_path):
    real, fake = _photo_crops(40, seed=5), _noisy(_photo_crops(40, seed=6), 0.2)
    first = _kid(real, fake, subsets=5)  # subset_size 1000 > 40 images
    assert first[KID]["protocol"]["subset_size"] == 40
    metric = KernelDistance(KernelDistance.Config(extractor="standin", subsets=5))
    for ids in (torch.arange(20, 40), torch.arange(0, 20)):  # batches out of order
        metric.update(EvalBatch(real=real[ids], fake=fake[ids], sample_ids=ids))
    assert metric.compute()[KID]["value"] == pytest.approx(first[KID]["value"], rel=1e-12)
    path = metric.write_artifacts(tmp_path)["kid_features"]
    with np.load(path, allow_pickle=False) as saved:
        assert saved["fake_ids"].tolist() == list(range(40))
        expected = build_extractor("standin")(fake)["pool"].numpy()
        np.testing.assert_allclose(saved["fake"], expected, rtol=1e-5, atol=1e-6)


def test_per_image_scores_are_kept_in_dataset_order_and_match_the_mean(tmp_path):
    real, fake = _photo_crops(24, seed=7), _noisy(_photo_crops(24, seed=7), 0.1)
    metric = PSNR()
    for ids in (torch.arange(12, 24), torch.arange(0, 12)):
        metric.update(EvalBatch(real=real[ids], fake=fake[ids], sample_ids=ids))
    mean = metric.compute()["psnr"]["value"]
    path = metric.write_artifacts(tmp_path)["per_image_psnr"]
    with np.load(path, allow_pickle=False) as saved:
        assert saved["sample_ids"].tolist() == list(range(24))
        batch = EvalBatch(real=real, fake=fake)
        expected = psnr_per_image(batch.uint8("real"), batch.uint8("fake")).numpy()
        np.testing.assert_allclose(saved["values"], expected)
        assert saved["values"].mean() == pytest.approx(mean)


def test_features_are_computed_without_tf32_and_the_cache_key_says_where(monkeypatch):
    extractor = build_extractor("standin")
    seen = []
    original = extractor.network.forward

    def spy(images):
        seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return original(images)

    monkeypatch.setattr(extractor.network, "forward", spy)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    extractor(_photo_crops(2))
    assert seen == [(False, False)]
    assert torch.backends.cudnn.allow_tf32  # restored for whatever runs next
    key = reference_key({"manifest_sha256": "ab" * 32, "dataset": "x"}, extractor, 10)
    assert key["extractor_device"] == "cpu" and "TF32 off" in key["extractor_precision"]
    assert extractor.protocol()["extractor_precision"] == key["extractor_precision"]


def test_kid_features_are_not_written_when_switched_off(tmp_path):
    real = _photo_crops(8, seed=9)
    metric = KernelDistance(KernelDistance.Config(extractor="standin", subsets=2, write_features=False))
    metric.update(EvalBatch(real=real, fake=real))
    metric.compute()
    assert metric.write_artifacts(tmp_path) == {} and not list(tmp_path.iterdir())
