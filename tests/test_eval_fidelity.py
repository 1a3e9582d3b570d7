"""FID / IS: agreement with torch-fidelity, the reference cache, labelling, weight loading."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from glotok_bench.errors import CheckpointError, MissingWeightsError
from glotok_bench.eval.batch import EvalBatch
from glotok_bench.eval.extractors import (
    INCEPTION_FILENAME,
    build_extractor,
    clear_extractor_cache,
    load_inception,
    register_standin_with_torch_fidelity,
)
from glotok_bench.eval.fidelity import FrechetDistance, InceptionScore
from glotok_bench.eval.reference import ReferenceStatsError
from glotok_bench.eval.standin import STANDIN_NAME

STANDIN_FID = f"rfid@{STANDIN_NAME}"


class _Payload:
    """Stands for arbitrary pickled code inside a weights file."""


def _user_inception_file() -> Path | None:
    """A real Inception file the user provides. Read at import time: the autouse fixture in
    conftest.py points $GLOTOK_WEIGHTS_DIR at an empty folder before each test runs."""
    candidates = [
        os.environ.get("GLOTOK_INCEPTION_WEIGHTS"),
        os.environ.get("GLOTOK_WEIGHTS_INCEPTION_FID"),
        os.path.join(os.environ["GLOTOK_WEIGHTS_DIR"], INCEPTION_FILENAME)
        if os.environ.get("GLOTOK_WEIGHTS_DIR")
        else None,
        str(Path.home() / ".cache" / "glotok_bench" / "weights" / INCEPTION_FILENAME),
        str(
            Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILENAME
        ),  # torch-fidelity's own download
    ]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


USER_INCEPTION = _user_inception_file()


def _photo_crops(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Random crops of bundled photos as [n, 3, size, size] in [-1, 1]: natural image statistics."""
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        photo = photos[rng.integers(len(photos))]
        y, x = rng.integers(photo.shape[0] - size), rng.integers(photo.shape[1] - size)
        crops.append(photo[y : y + size, x : x + size])
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _noisy(images: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return (images + sigma * noise).clamp(-1, 1)


def _stream(metric, real: torch.Tensor | None, fake: torch.Tensor, batch: int = 32):
    for start in range(0, len(fake), batch):
        ids = torch.arange(start, min(start + batch, len(fake)))
        metric.update(
            EvalBatch(real=None if real is None else real[ids], fake=fake[ids], sample_ids=ids)
        )
    return metric.compute()


def _fid(real, fake, **config) -> float:
    config.setdefault("extractor", "standin")
    config.setdefault("cache", False)
    return _stream(FrechetDistance(FrechetDistance.Config(**config)), real, fake)[STANDIN_FID][
        "value"
    ]


class _Uint8Images(torch.utils.data.Dataset):
    """torch-fidelity's input format: a Dataset of uint8 [3, H, W] tensors."""

    def __init__(self, images: torch.Tensor):
        from glotok_bench.data.preprocess import to_uint8

        self.images = to_uint8(images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def _torch_fidelity(real: torch.Tensor, fake: torch.Tensor, **kwargs) -> dict:
    import torch_fidelity

    return torch_fidelity.calculate_metrics(
        input1=_Uint8Images(fake), input2=_Uint8Images(real), fid=True, isc=True, isc_splits=1,
        cuda=False, cache=False, save_cpu_ram=True, verbose=False, batch_size=16, **kwargs,
    )  # fmt: skip


# -- behaviour of the distance ---------------------------------------------------------------


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_noise():
    images = _photo_crops(128)
    # Not exactly 0: 128 samples give a rank-127 covariance in 480-d, and the square roots
    # of its ~1e-17 rounding-noise eigenvalues add up to ~1e-5.
    assert abs(_fid(images, images)) < 1e-4
    distances = [_fid(images, _noisy(images, sigma)) for sigma in (0.05, 0.15, 0.4)]
    assert 0 < distances[0] < distances[1] < distances[2]


def test_streaming_fid_and_is_equal_torch_fidelity_on_the_same_network():
    real, fake = _photo_crops(64, seed=2), _noisy(_photo_crops(64, seed=3), 0.1)
    expected = _torch_fidelity(real, fake, feature_extractor=register_standin_with_torch_fidelity())
    fid = _fid(real, fake)
    inception_score = _stream(
        InceptionScore(InceptionScore.Config(extractor="standin", splits=1)), None, fake
    )
    assert fid == pytest.approx(expected["frechet_inception_distance"], rel=1e-5)
    assert inception_score[f"is@{STANDIN_NAME}"]["value"] == pytest.approx(
        expected["inception_score_mean"], rel=1e-6
    )


# -- reference statistics: cache and external files -------------------------------------------


def _protocol(**changes) -> dict:
    protocol = {
        "dataset": "photo-crops", "split": "val", "count": 96, "resolution": 32,
        "crop": "random", "resize_filter": "none", "manifest_sha256": "ab" * 32,
    }  # fmt: skip
    return {**protocol, **changes}


def test_cached_reference_is_reused_and_gives_the_same_number(tmp_path):
    real, fake = _photo_crops(96, seed=4), _noisy(_photo_crops(96, seed=5), 0.1)
    config = FrechetDistance.Config(extractor="standin", cache_dir=str(tmp_path))
    first = FrechetDistance(config, data_protocol=_protocol())
    assert first.needs_real
    uncached = _stream(first, real, fake)[STANDIN_FID]
    assert uncached["protocol"]["reference"] == "computed"
    assert len(list(tmp_path.glob("*.npz"))) == 1

    second = FrechetDistance(config, data_protocol=_protocol())
    assert not second.needs_real  # the loop will not run the extractor on real images
    cached = _stream(second, None, fake)[STANDIN_FID]  # no real images given at all
    assert cached["protocol"]["reference"] == "cache"
    assert cached["value"] == pytest.approx(uncached["value"], rel=1e-12)
    assert (
        cached["protocol"]["reference_key_sha256"] == uncached["protocol"]["reference_key_sha256"]
    )


@pytest.fixture(scope="module")
def populated_cache(tmp_path_factory) -> FrechetDistance.Config:
    """A cache folder holding the stand-in reference statistics for ``_protocol()``."""
    config = FrechetDistance.Config(
        extractor="standin", cache_dir=str(tmp_path_factory.mktemp("stats"))
    )
    images = _photo_crops(96, seed=4)
    _stream(FrechetDistance(config, data_protocol=_protocol()), images, images)
    return config


@pytest.mark.parametrize(
    ("change", "hit"),
    [
        ({}, True),
        ({"root": "/elsewhere"}, True),  # the same files moved: the manifest hash names them
        ({"count": 95}, False),
        ({"manifest_sha256": "cd" * 32}, False),
        ({"crop": "center"}, False),
        ({"resize_filter": "bicubic"}, False),
        ({"resolution": 64}, False),
        ({"split": "train"}, False),
    ],
)
def test_reference_cache_hits_only_when_nothing_behind_the_statistics_changed(
    populated_cache, change, hit
):
    assert FrechetDistance(populated_cache, data_protocol=_protocol(**change)).needs_real is not hit


def test_no_manifest_hash_means_no_cache(tmp_path):
    protocol = {key: value for key, value in _protocol().items() if key != "manifest_sha256"}
    config = FrechetDistance.Config(extractor="standin", cache_dir=str(tmp_path))
    images = _photo_crops(96, seed=4)
    result = _stream(FrechetDistance(config, data_protocol=protocol), images, images)[STANDIN_FID]
    assert "reference_key_sha256" not in result["protocol"]
    assert not list(tmp_path.iterdir())


def test_external_mu_sigma_file_gives_the_same_fid_as_the_images_behind_it(tmp_path):
    real, fake = _photo_crops(96, seed=6), _noisy(_photo_crops(96, seed=7), 0.2)
    features = build_extractor("standin")(real)["pool"].double().numpy()
    path = tmp_path / "adm_style_reference.npz"  # ADM layout: just mu and sigma
    np.savez(path, mu=features.mean(0), sigma=np.cov(features, rowvar=False))
    external = _stream(
        FrechetDistance(
            FrechetDistance.Config(extractor="standin", label="gfid", reference_stats=str(path))
        ),
        None,
        fake,
    )[f"gfid@{STANDIN_NAME}"]
    assert external["value"] == pytest.approx(_fid(real, fake), rel=1e-6)
    assert external["protocol"]["reference"] == "external"
    assert external["protocol"]["reference_file"] == path.name

    inception_sized = tmp_path / "inception_reference.npz"
    np.savez(inception_sized, mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(ReferenceStatsError, match="Inception"):
        FrechetDistance(
            FrechetDistance.Config(extractor="standin", reference_stats=str(inception_sized))
        )


# -- labelling and weights ---------------------------------------------------------------------


def test_standin_numbers_carry_the_extractor_name():
    images = _photo_crops(64, seed=8)
    result = _stream(
        FrechetDistance(FrechetDistance.Config(extractor="standin", cache=False)), images, images
    )
    assert list(result) == [STANDIN_FID]  # never plain "rfid"
    protocol = result[STANDIN_FID]["protocol"]
    assert protocol["extractor"] == STANDIN_NAME and protocol["literature_comparable"] is False
    assert len(protocol["extractor_weights_sha256"]) == 64


def test_standin_network_is_deterministic():
    first, second = build_extractor("standin"), None
    clear_extractor_cache()
    second = build_extractor("standin")
    assert first is not second and first.weights_sha256 == second.weights_sha256
    images = _photo_crops(4, seed=9)
    torch.testing.assert_close(first(images)["pool"], second(images)["pool"], rtol=0, atol=0)


def test_missing_inception_file_is_a_clear_error_and_auto_falls_back_loudly(tmp_path):
    with pytest.raises(MissingWeightsError) as error:
        build_extractor("inception")
    assert INCEPTION_FILENAME in str(error.value) and "--inception" in str(error.value)
    with pytest.raises(MissingWeightsError, match="does not exist"):
        build_extractor(
            "auto", inception_weights=tmp_path / "nowhere.pth"
        )  # explicit: never a fallback
    with pytest.warns(UserWarning, match=STANDIN_NAME):
        assert build_extractor("auto").name == STANDIN_NAME


@pytest.fixture(scope="module")
def random_inception_file(tmp_path_factory) -> Path:
    """torch-fidelity's Inception with random weights, saved in the real file's key layout."""
    import torch_fidelity.feature_extractor_inceptionv3 as module

    with pytest.MonkeyPatch.context() as patch:
        # Build the module without its weights (the constructor would download them).
        patch.setattr(module, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(
            module.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state, *a, **k: None
        )
        network = module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.manual_seed(0)
    for layer in network.modules():
        if isinstance(layer, torch.nn.Conv2d):  # keeps activations O(1) through 90 layers
            torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("inception") / INCEPTION_FILENAME
    torch.save(network.state_dict(), path)
    return path


def _assert_matches_torch_fidelity(inception_file: Path, count: int) -> None:
    """Our streaming FID equals torch-fidelity's ``calculate_metrics`` on the same images."""
    real, fake = _photo_crops(count, seed=10), _noisy(_photo_crops(count, seed=11), 0.2)
    config = FrechetDistance.Config(
        extractor="inception", inception_weights=str(inception_file), cache=False
    )
    ours = _stream(FrechetDistance(config), real, fake, batch=8)
    expected = _torch_fidelity(real, fake, feature_extractor_weights_path=str(inception_file))
    assert list(ours) == ["rfid"] and ours["rfid"]["protocol"]["literature_comparable"] is True
    assert ours["rfid"]["value"] == pytest.approx(expected["frechet_inception_distance"], rel=1e-4)


def test_inception_loads_from_a_local_file_and_matches_torch_fidelity(random_inception_file):
    """Random weights in the real graph and key layout: our loading path gives exactly the
    features torch-fidelity's own loader gives from the same file. (FID on top of the
    features is checked against torch-fidelity above; a 2048-d FID costs ~10 s here.)"""
    from torch_fidelity.utils import create_feature_extractor

    from glotok_bench.data.preprocess import to_uint8
    from glotok_bench.eval.extractors import metric_name

    images = _photo_crops(2, seed=10)
    ours = build_extractor("inception", inception_weights=random_inception_file)
    assert metric_name("rfid", ours) == "rfid" and ours.protocol()["literature_comparable"] is True
    assert ours.protocol()["extractor_weights_file"] == INCEPTION_FILENAME
    theirs = create_feature_extractor(
        "inception-v3-compat", ["2048", "logits_unbiased"], cuda=False,
        feature_extractor_weights_path=str(random_inception_file), verbose=False,
    )  # fmt: skip
    with torch.no_grad():
        pool, logits = theirs(to_uint8(images))
    mine = ours(images)
    assert pool.std() > 0  # the random file still gives informative features
    torch.testing.assert_close(mine["pool"], pool, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mine["logits"], logits, rtol=1e-5, atol=1e-6)


def test_inception_files_with_code_or_another_layout_are_refused(tmp_path, random_inception_file):
    state = torch.load(random_inception_file, weights_only=True)
    state["payload"] = _Payload()  # an arbitrary object: only a full unpickler rebuilds it
    with_code = tmp_path / "with_code.pth"
    torch.save(state, with_code)
    with pytest.raises(CheckpointError, match="safely"):
        load_inception(with_code)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(10, 2048)}, other)
    with pytest.raises(CheckpointError, match="not torch-fidelity's FID Inception"):
        load_inception(other)


@pytest.mark.weights
@pytest.mark.skipif(
    USER_INCEPTION is None,
    reason=f"no real {INCEPTION_FILENAME}: set GLOTOK_WEIGHTS_INCEPTION_FID (or put it in $GLOTOK_WEIGHTS_DIR) to run",
)
def test_fid_with_the_real_inception_equals_torch_fidelity():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch-fidelity's own loader warns about weights_only
        _assert_matches_torch_fidelity(USER_INCEPTION, count=16)
