"""The real pipeline on demo data: tokenizer checkpoint -> ``tokenize`` -> generator
training -> samples decoded by that tokenizer -> ADM npz. Guards the interfaces the
fakes in the other generator tests stand in for."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from glotok_bench.config import ComponentChoice

# Tiny models run faster on one thread, and far faster when the 2 cores are shared.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_demo_tokens_train_and_decode_through_the_tokenizer(demo_root, tmp_path):
    from glotok_bench.data.demo import DemoDataset
    from glotok_bench.generators.generate import generate_to_dir
    from glotok_bench.generators.presets import PRESETS
    from glotok_bench.generators.train import (
        GeneratorRunConfig,
        GeneratorTrainConfig,
        train_generator,
    )
    from glotok_bench.tokenizer import standalone_registry
    from glotok_bench.tokenizer.checkpoint import save_checkpoint
    from glotok_bench.tokenizer.model import Tokenizer, load_tokenizer_config
    from glotok_bench.tokenizer.tokenize import tokenize_dataset

    registry = standalone_registry()
    tokenizer_config = load_tokenizer_config(Path(__file__).parents[1] / "configs/cpu/glotok.toml")
    save_checkpoint(tmp_path / "tokenizer.pt", Tokenizer(tokenizer_config, registry=registry))
    data = DemoDataset(
        DemoDataset.Config(cache_dir=str(demo_root), max_images=96, horizontal_flip=False),
        split="train",
        resolution=32,
    )
    tokenize_dataset(
        tmp_path / "tokenizer.pt", data, tmp_path / "tokens", batch_size=48, registry=registry
    )
    for name in ("far-tiny", "xar-tiny"):
        train = GeneratorTrainConfig(
            max_steps=6, batch_size=8, lr=1e-3, device="cpu", num_classes=14
        )
        config = GeneratorRunConfig(
            generator=ComponentChoice(name, PRESETS[name].cls.Config()), train=train
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # plugins of other kinds that are not installed here
            result = train_generator(
                config, tmp_path / "tokens", tmp_path / name, registry=registry
            )
        assert np.isfinite(result.loss_last)
        # The tokenizer is found through the token manifest (path + sha256) and decodes.
        options = {"steps_first": 2, "steps_last": 2} if name == "xar-tiny" else {}
        out = generate_to_dir(
            result.checkpoint, tmp_path / name / "samples", per_class=1, cfg_scale=1.5,
            device="cpu", registry=registry, batch_size=14, **options,
        )  # fmt: skip
        with np.load(out["npz"]) as samples:
            assert samples["arr_0"].shape == (14, 32, 32, 3) and samples["arr_0"].dtype == np.uint8
        assert (
            out["protocol"]["num_classes"] == 14 and len(out["protocol"]["tokenizer_sha256"]) == 64
        )
