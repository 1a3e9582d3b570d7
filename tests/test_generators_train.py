"""Generator training (falling loss, exact resume, refusals) and generation to ADM npz."""

from __future__ import annotations

import json
import math
import warnings

import attrs
import numpy as np
import pytest
import torch
from test_generators_tokens import FakeTokenizer, write_fake_tokens

from glotok_bench.config import ComponentChoice
from glotok_bench.errors import CheckpointError, ConfigError

# Tiny models run faster on one thread, and far faster when the 2 cores are shared.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory):
    return write_fake_tokens(tmp_path_factory.mktemp("tokens") / "fake")


def run_config(
    name: str, *, steps: int, every: int | None = None, ema: bool = False, lr: float = 3e-3, **model
):
    from glotok_bench.generators.presets import PRESETS
    from glotok_bench.generators.train import GeneratorRunConfig, GeneratorTrainConfig

    cls = PRESETS[name].cls
    train = GeneratorTrainConfig(
        max_steps=steps,
        batch_size=16,
        lr=lr,
        checkpoint_every=every or steps,
        flush_every=10,
        ema=ema,
        ema_decay=0.9,
        device="cpu",
        seed=1,
    )
    return GeneratorRunConfig(generator=ComponentChoice(name, cls.Config(**model)), train=train)


@pytest.mark.parametrize(
    ("name", "model", "ratio"),
    [("far-tiny", {}, 0.35), ("xar-tiny", {}, 0.9), ("ar-tiny", {"branch": "semantic"}, 0.35)],
)
def test_loss_falls_on_a_learnable_token_set(token_dir, tmp_path, name, model, ratio):
    from glotok_bench.generators.train import train_generator

    result = train_generator(run_config(name, steps=50, **model), token_dir, tmp_path / "run")
    losses = [loss for _, loss in result.loss_curve]
    assert result.final_step == 50 and len(losses) == 50
    assert np.mean(losses[-10:]) < ratio * np.mean(losses[:5]), losses[::5]
    assert result.tokens_per_s > 0 and result.device_info["type"] == "cpu"
    assert (tmp_path / "run" / "checkpoints" / "ckpt-00000050.pt").is_file()


@pytest.mark.parametrize("name", ["xar-tiny", "far-tiny"])
def test_resumed_run_reaches_the_same_weights(token_dir, tmp_path, name):
    from glotok_bench.generators.checkpoint import read_generator_checkpoint
    from glotok_bench.generators.train import train_generator

    # xAR draws flow times and noise, FAR dropout masks, both class dropout: all RNG.
    model = {"dropout": 0.1} if name == "far-tiny" else {}
    straight = train_generator(
        run_config(name, steps=12, every=6, ema=True, **model), token_dir, tmp_path / "a"
    )
    first = train_generator(
        run_config(name, steps=6, every=6, ema=True, **model), token_dir, tmp_path / "b"
    )
    resumed = train_generator(
        run_config(name, steps=12, every=6, ema=True, **model), token_dir, tmp_path / "b"
    )
    assert first.final_step == 6 and resumed.resumed_from == 6 and resumed.steps_run == 6
    a = read_generator_checkpoint(straight.checkpoint)
    b = read_generator_checkpoint(resumed.checkpoint)
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for param in a[key]:
            assert torch.equal(a[key][param], b[key][param]), f"{key}.{param} differs after resume"
    log_a = [
        json.loads(line)["loss"]
        for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    ]
    log_b = [
        json.loads(line)["loss"]
        for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    ]
    assert log_a == log_b


def test_runs_and_checkpoints_are_refused_when_they_do_not_fit(token_dir, tmp_path):
    from glotok_bench.generators.checkpoint import load_generator, read_generator_checkpoint
    from glotok_bench.generators.train import train_generator

    result = train_generator(run_config("far-tiny", steps=4, every=2), token_dir, tmp_path / "run")
    with pytest.raises(ConfigError, match="already holds a run"):
        train_generator(run_config("far-tiny", steps=6), token_dir, tmp_path / "run", resume=False)
    with pytest.raises(CheckpointError, match="another run"):
        train_generator(run_config("far-tiny", steps=6, dim=32), token_dir, tmp_path / "run")
    # A torn newest checkpoint is skipped in favour of the one before it.
    newest = tmp_path / "run" / "checkpoints" / "ckpt-00000004.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        read_generator_checkpoint(newest)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        again = train_generator(
            run_config("far-tiny", steps=4, every=2), token_dir, tmp_path / "run"
        )
    assert again.resumed_from == 2 and again.final_step == 4
    # Pickled objects (possibly code) are refused by weights_only loading.
    evil = tmp_path / "evil.pt"
    torch.save({"format": "glotok-bench/generator", "thing": warnings.WarningMessage}, evil)
    with pytest.raises(CheckpointError, match="pickled"):
        load_generator(evil)
    model, payload = load_generator(result.checkpoint)
    assert payload["step"] == 4 and not model.training
    # Every checkpoint unreadable: refused as by the tokenizer trainer, nothing overwritten.
    for path in (tmp_path / "run" / "checkpoints").glob("ckpt-*.pt"):
        path.write_bytes(b"junk")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match="none is readable"):
            train_generator(run_config("far-tiny", steps=6, every=2), token_dir, tmp_path / "run")
    assert {p.read_bytes() for p in (tmp_path / "run" / "checkpoints").iterdir()} == {b"junk"}


@pytest.mark.parametrize(
    ("name", "decoder"), [("far-tiny", "decode_indices"), ("xar-tiny", "decode")]
)
def test_generate_writes_adm_npz_and_png_grid(token_dir, tmp_path, name, decoder):
    from PIL import Image

    from glotok_bench.generators.generate import adm_labels, generate, generate_to_dir
    from glotok_bench.generators.train import train_generator

    options = {"steps_first": 3, "steps_last": 2} if name == "xar-tiny" else {"top_k": 10}
    result = train_generator(run_config(name, steps=2), token_dir, tmp_path / "run")
    tokenizer = FakeTokenizer()
    out = generate_to_dir(
        result.checkpoint,
        tmp_path / "samples",
        tokenizer=tokenizer,
        per_class=2,
        cfg_scale=1.5,
        batch_size=3,
        seed=4,
        **options,
    )
    assert tokenizer.calls and set(tokenizer.calls) == {decoder}
    with np.load(out["npz"]) as data:
        images = data["arr_0"]
    assert images.dtype == np.uint8 and images.shape == (8, 16, 16, 3)
    assert Image.open(out["grid"]).size == (48, 48)  # 3 x 3 cells for 8 images
    assert out["protocol"]["num_samples"] == 8 and out["protocol"]["per_class"] == 2
    assert adm_labels(4, 2).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # Same seed and batch size -> same images; the result does not depend on a global RNG.
    torch.manual_seed(123)
    again = generate(
        result.checkpoint,
        tokenizer,
        adm_labels(4, 2),
        cfg_scale=1.5,
        batch_size=3,
        seed=4,
        device="cpu",
        **options,
    )
    assert np.array_equal(again, images)
    with pytest.raises(ConfigError, match="codebooks"):
        generate(
            result.checkpoint,
            FakeTokenizer({"codes": 64}, code_dim=8),
            adm_labels(4, 1),
            device="cpu",
        )


def test_lr_schedule_warmup_hold_then_cosine_to_the_floor():
    from glotok_bench.generators.train import LrSchedule
    from glotok_bench.train.config import GeneratorTrainConfig

    # xAR's shape on a 100-epoch toy: 10 warmup epochs, hold to epoch 60, cosine to 1e-5.
    cfg = GeneratorTrainConfig(lr=4e-4, warmup_epochs=10, lr_schedule="constant-cosine",
                               cosine_start_epoch=60, min_lr=1e-5, epochs=100)  # fmt: skip
    schedule = LrSchedule.from_config(cfg, total_steps=200, steps_per_epoch=2.0)
    assert schedule.warmup_steps == 20 and schedule.cosine_start == 120
    assert schedule.at(0) == pytest.approx(4e-4 / 20) and schedule.at(19) == pytest.approx(4e-4)
    assert schedule.at(20) == schedule.at(119) == pytest.approx(4e-4)
    assert schedule.at(160) == pytest.approx(1e-5 + (4e-4 - 1e-5) / 2)  # half way down
    assert schedule.at(200) == pytest.approx(1e-5)
    lrs = [schedule.at(s) for s in range(120, 201)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    cosine = LrSchedule.from_config(GeneratorTrainConfig(lr=1.0, lr_schedule="cosine",
                                                         min_lr_ratio=0.1), 10, 1.0)  # fmt: skip
    assert cosine.at(0) == pytest.approx(1.0) and cosine.at(10) == pytest.approx(0.1)


def test_training_length_in_epochs(token_dir, tmp_path):
    from glotok_bench.generators.train import GeneratorTrainer

    config = run_config("far-tiny", steps=1000)
    config = type(config)(generator=config.generator,
                          train=attrs.evolve(config.train, epochs=2.5))  # fmt: skip
    trainer = GeneratorTrainer(config, token_dir)
    count = trainer.tensors["labels"].shape[0]
    assert trainer.settings.total_steps == math.ceil(2.5 * count / 16)
