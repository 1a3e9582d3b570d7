"""Trainer: loss falls, logs, supervision plug-in, bad settings, exact resume after a crash/kill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import pytest
import torch
from torch import nn

from glotok_bench.errors import CheckpointError, ConfigError, MissingWeightsError
from glotok_bench.tokenizer import standalone_registry
from glotok_bench.tokenizer.config import DiscriminatorConfig, LossConfig
from glotok_bench.tokenizer.model import load_tokenizer_config
from glotok_bench.train.config import TrainConfig
from glotok_bench.train.data import ResumableBatchSampler
from glotok_bench.train.ema import EMA
from glotok_bench.train.metrics_log import read_log
from glotok_bench.train.trainer import train

REGISTRY = standalone_registry()


# Tiny models run faster on one thread, and far faster when the 2 cores are shared.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


ROOT = Path(__file__).resolve().parent.parent
TINY = load_tokenizer_config(ROOT / "tests" / "configs" / "tiny-16.toml")
# GAN from step 3 so resume tests cross the switch; 16 px needs a 2-layer PatchGAN.
LOSS = LossConfig(
    perceptual=False, disc_start=3, discriminator=DiscriminatorConfig(base_channels=8, num_layers=2)
)


def smooth_images(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Low-frequency images (upsampled 4x4 noise): learnable by a tiny autoencoder."""
    coarse = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


def dataset(n: int = 12) -> torch.utils.data.Dataset:
    return torch.utils.data.TensorDataset(smooth_images(n), torch.arange(n))


def config(**overrides) -> TrainConfig:
    settings = dict(
        max_steps=8, batch_size=4, checkpoint_every=3, flush_every=2, progress=False, usage_window=4
    )
    settings.update(overrides)
    return TrainConfig(**settings)


class FakeSupervision(nn.Module):
    """Stands in for the semantic-supervision plugin: pulls codes to the unit sphere."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.seen: list[tuple] = []

    def loss(self, semantic_codebook, quantized_semantic, images):
        self.seen.append((semantic_codebook, tuple(quantized_semantic.shape), tuple(images.shape)))
        return self.scale * (semantic_codebook.norm(dim=1) - 1).square().mean()

    def describe(self):
        return {"name": "fake"}


def states(run_dir: Path, step: int) -> dict:
    return torch.load(run_dir / "checkpoints" / f"ckpt-{step:08d}.pt", weights_only=True)


def assert_same_weights(a: dict, b: dict) -> None:
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"
    for name, tensor in a["training"]["discriminator"].items():
        assert torch.equal(tensor, b["training"]["discriminator"][name]), (
            f"discriminator.{name} differs"
        )
    for pa, pb in zip(
        a["training"]["optimizer"]["state"].values(),
        b["training"]["optimizer"]["state"].values(),
        strict=True,
    ):
        assert torch.equal(pa["exp_avg_sq"], pb["exp_avg_sq"])


def without_wall_time(log: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if k != "wall_s"} for line in log]


# -- building blocks -----------------------------------------------------------------------


def test_ema_warmup_and_buffer_copy():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.99, warmup=True)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(5.0)
    ema.update()  # decay min(0.99, 1/10) = 0.1 -> shadow moves 90% of the way
    assert torch.allclose(ema.state_dict()["0.weight"], start + 0.9)
    assert torch.equal(ema.state_dict()["1.running_mean"], torch.full((2,), 5.0))
    assert ema.current_decay() == pytest.approx(2 / 11)


def test_sampler_batch_depends_only_on_step_and_ranks_split_it():
    full = ResumableBatchSampler(10, 4, seed=3, start_step=0)
    stream = iter(full)
    first_eight = [next(stream) for _ in range(8)]
    resumed = iter(ResumableBatchSampler(10, 4, seed=3, start_step=5))
    assert [next(resumed) for _ in range(3)] == first_eight[5:]
    rank0 = next(iter(ResumableBatchSampler(10, 4, seed=3, start_step=0, rank=0, world_size=2)))
    rank1 = next(iter(ResumableBatchSampler(10, 4, seed=3, start_step=0, rank=1, world_size=2)))
    assert rank0 + rank1 == first_eight[0]
    tiny = next(iter(ResumableBatchSampler(3, 8, seed=0, start_step=0)))  # smaller than a batch
    assert len(tiny) == 8 and set(tiny) == {0, 1, 2}


# -- training ------------------------------------------------------------------------------


def test_training_reduces_reconstruction_loss_and_logs_every_step(tmp_path):
    result = train(
        TINY,
        LossConfig(perceptual=False, adversarial_weight=0.0),
        config(max_steps=40, lr=2e-3, checkpoint_every=20, flush_every=10),
        dataset(),
        run_dir=tmp_path,
        registry=REGISTRY,
    )
    log = read_log(tmp_path / "metrics.jsonl")
    assert [line["step"] for line in log] == list(range(1, 41))
    rec = [line["rec"] for line in log]
    assert sum(rec[-5:]) < 0.5 * sum(rec[:5])
    assert {"quant", "res", "total", "semantic/usage", "visual/perplexity"} <= set(log[0])
    assert "semantic/usage_window" in log[3] and "semantic/usage_window" not in log[2]
    assert result.final_step == 40 and result.perceptual_loss is False
    assert "perceptual = false" in result.perceptual_note
    assert result.device == "cpu" and result.precision == "fp32"
    assert result.images_per_s > 0 and result.peak_memory_bytes > 0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "ckpt-00000020.pt",
        "ckpt-00000040.pt",
    ]


def test_supervision_gets_the_semantic_codebook_and_is_weighted(tmp_path):
    supervision = FakeSupervision()
    result = train(
        TINY,
        LOSS,
        config(max_steps=2),
        dataset(),
        run_dir=tmp_path,
        registry=REGISTRY,
        supervision=supervision,
    )
    codebook, quantized_shape, image_shape = supervision.seen[0]
    assert isinstance(codebook, nn.Parameter) and codebook.shape == (16, 4)
    assert quantized_shape == (4, 4, 8, 8) and image_shape == (4, 3, 16, 16)
    assert result.supervision == {"name": "fake"} and "semantic" in result.losses
    assert supervision.scale.item() != 1.0  # its parameters are optimised with the model


def test_supervision_without_semantic_codebook_is_a_config_error(tmp_path):
    from glotok_bench.config import ComponentChoice
    from glotok_bench.tokenizer.quantizers import VectorQuantizer

    vq = type(TINY)(
        resolution=16,
        autoencoder=TINY.autoencoder,
        residual_head=TINY.residual_head,
        quantizer=ComponentChoice("vq", VectorQuantizer.Config(codebook_size=32, code_dim=4)),
    )
    with pytest.raises(ConfigError, match="semantic"):
        train(
            vq,
            LOSS,
            config(),
            dataset(),
            run_dir=tmp_path,
            registry=REGISTRY,
            supervision=FakeSupervision(),
        )


def test_missing_perceptual_weights_stop_the_run_before_it_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("GLOTOK_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    monkeypatch.delenv("GLOTOK_WEIGHTS_VGG16", raising=False)
    run_dir = tmp_path / "run"
    with pytest.raises(MissingWeightsError, match="vgg16"):
        train(
            TINY,
            LossConfig(vgg_weights=str(tmp_path / "absent.pth")),
            config(),
            dataset(),
            run_dir=run_dir,
            registry=REGISTRY,
        )
    assert not run_dir.exists()


def test_bf16_on_cpu_and_reused_run_dirs_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="bf16"):
        train(TINY, LOSS, config(precision="bf16"), dataset(), run_dir=tmp_path, registry=REGISTRY)
    train(TINY, LOSS, config(max_steps=1), dataset(), run_dir=tmp_path, registry=REGISTRY)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(
            TINY,
            LOSS,
            config(max_steps=1),
            dataset(),
            run_dir=tmp_path,
            registry=REGISTRY,
            resume=False,
        )


def test_resume_with_another_architecture_is_refused_and_keeps_files(tmp_path):
    train(TINY, LOSS, config(max_steps=3), dataset(), run_dir=tmp_path, registry=REGISTRY)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match="do not fit|another architecture"):
        train(
            load_tokenizer_config(ROOT / "configs" / "cpu" / "glotok.toml"),
            LOSS,
            config(max_steps=6),
            dataset(),
            run_dir=tmp_path,
            registry=REGISTRY,
        )
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    # Same model, other training settings (no discriminator): refused too, not restarted.
    with pytest.raises(CheckpointError, match="discriminator"):
        train(TINY, LossConfig(perceptual=False, adversarial_weight=0.0), config(max_steps=6), dataset(),
              run_dir=tmp_path, registry=REGISTRY)  # fmt: skip
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_torn_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    train(TINY, LOSS, config(max_steps=6), dataset(), run_dir=tmp_path, registry=REGISTRY)
    newest = tmp_path / "checkpoints" / "ckpt-00000006.pt"
    newest.write_bytes(newest.read_bytes()[:500])
    with pytest.warns(UserWarning, match="unreadable"):
        result = train(
            TINY, LOSS, config(max_steps=6), dataset(), run_dir=tmp_path, registry=REGISTRY
        )
    assert result.resumed_from == 3 and result.final_step == 6
    (tmp_path / "checkpoints" / "ckpt-00000003.pt").write_bytes(b"junk")
    (tmp_path / "checkpoints" / "ckpt-00000006.pt").write_bytes(b"junk")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="none is readable"):
        train(TINY, LOSS, config(max_steps=9), dataset(), run_dir=tmp_path, registry=REGISTRY)


class Crash(Exception):
    pass


def test_resume_after_a_crash_reaches_identical_weights(tmp_path):
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    train(
        TINY,
        LOSS,
        config(),
        dataset(),
        run_dir=straight,
        registry=REGISTRY,
        supervision=FakeSupervision(),
    )

    def crash_at_step_5(step, _trainer):
        if step == 5:
            raise Crash

    with pytest.raises(Crash):
        train(TINY, LOSS, config(), dataset(), run_dir=crashed, registry=REGISTRY,
              supervision=FakeSupervision(), on_step_end=crash_at_step_5)  # fmt: skip
    resumed = train(
        TINY,
        LOSS,
        config(),
        dataset(),
        run_dir=crashed,
        registry=REGISTRY,
        supervision=FakeSupervision(),
    )
    assert resumed.resumed_from == 3 and resumed.steps_run == 5
    assert_same_weights(states(straight, 8), states(crashed, 8))
    assert torch.equal(
        states(straight, 8)["training"]["supervision"]["scale"],
        states(crashed, 8)["training"]["supervision"]["scale"],
    )
    # The log reads as if the run never stopped (steps 4-5 were logged twice, then cut).
    assert without_wall_time(read_log(crashed / "metrics.jsonl")) == without_wall_time(
        read_log(straight / "metrics.jsonl")
    )
    # So do the TensorBoard curves written beside it (TensorBoard purges the re-logged steps).
    assert tensorboard_scalars(crashed, "rec") == tensorboard_scalars(straight, "rec")
    assert [step for step, _ in tensorboard_scalars(straight, "rec")] == list(range(1, 9))


def tensorboard_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(event.step, round(event.value, 6)) for event in events.Scalars(tag)]


@pytest.mark.slow
def test_resume_after_the_process_is_killed_reaches_identical_weights(tmp_path):
    """A real SIGKILL mid-run (right after the step-6 checkpoint) in a subprocess."""
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import torch
        torch.set_num_threads(1)  # as the test process, so kernels reduce in the same order
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_train_loop import LOSS, REGISTRY, TINY, config, dataset
        from glotok_bench.train.trainer import train

        def kill(step, _trainer):
            if step == 7:
                os.kill(os.getpid(), signal.SIGKILL)

        train(TINY, LOSS, config(max_steps=10), dataset(), run_dir={str(killed)!r}, registry=REGISTRY, on_step_end=kill)
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")])
        ),
    }
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -9, proc.stderr
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == [
        "ckpt-00000003.pt",
        "ckpt-00000006.pt",
    ]
    resumed = train(TINY, LOSS, config(max_steps=10), dataset(), run_dir=killed, registry=REGISTRY)
    assert resumed.resumed_from == 6
    train(TINY, LOSS, config(max_steps=10), dataset(), run_dir=straight, registry=REGISTRY)
    assert_same_weights(states(straight, 10), states(killed, 10))
    assert [line["step"] for line in read_log(killed / "metrics.jsonl")] == list(range(1, 11))


def test_perceptual_loss_runs_from_local_files(tmp_path):
    from glotok_bench.tokenizer.perceptual import write_random_lpips_weights

    vgg, lin = write_random_lpips_weights(tmp_path)
    loss = LossConfig(vgg_weights=str(vgg), lpips_weights=str(lin), disc_start=0,
                      discriminator=DiscriminatorConfig(base_channels=8, num_layers=2))  # fmt: skip
    result = train(
        TINY, loss, config(max_steps=2), dataset(), run_dir=tmp_path / "run", registry=REGISTRY
    )
    assert result.perceptual_loss is True and result.losses["perceptual"] > 0
    assert "disc" in result.losses and "gen" in result.losses
    assert "dropout 0.5 in training" in result.perceptual_note  # LlamaGen's default
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert line["gan"] is True
    # The trainer puts LPIPS in train mode, so its dropout is live: the same first step
    # without it logs a different L_P.
    without = train(TINY, attrs.evolve(loss, lpips_dropout=0.0), config(max_steps=1), dataset(),
                    run_dir=tmp_path / "no-dropout", registry=REGISTRY)  # fmt: skip
    assert without.perceptual_note.endswith("dropout 0 in training)")
    first = [read_log(run / "metrics.jsonl")[0]["perceptual"] for run in (tmp_path / "run", tmp_path / "no-dropout")]
    assert first[0] != first[1]


def test_adaptive_gan_weight_balances_gradient_norms(tmp_path):
    from glotok_bench.tokenizer.losses import adaptive_weight

    weight = nn.Parameter(torch.randn(3))
    ratio = adaptive_weight((2 * weight).sum(), (0.5 * weight).sum(), weight)
    assert ratio.item() == pytest.approx(4.0, rel=1e-3) and not ratio.requires_grad
    loss = LossConfig(
        perceptual=False, disc_start=0, adaptive_adversarial_weight=True,
        discriminator=DiscriminatorConfig(base_channels=8, num_layers=2, norm="group"),
    )  # fmt: skip
    result = train(TINY, loss, config(max_steps=2), dataset(), run_dir=tmp_path, registry=REGISTRY)
    assert result.losses["gen_weight"] > 0 and "disc" in result.losses


def test_unreadable_training_images_are_skipped_and_counted(tmp_path):
    import numpy as np
    from PIL import Image

    from glotok_bench.data.imagefolder import ImageFolderDataset

    folder = tmp_path / "data" / "train" / "a"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG truncated")
    data = ImageFolderDataset(ImageFolderDataset.Config(root=str(tmp_path / "data")), split="train",
                              resolution=16, train=True)
    result = train(TINY, LOSS, config(max_steps=4, checkpoint_every=4), data, run_dir=tmp_path / "run",
                   registry=standalone_registry())
    assert result.final_step == 4
    unreadable = result.unreadable_images
    assert unreadable["count"] == 1 and "broken.png" in unreadable["files"][0]


class NaNAtStep(FakeSupervision):
    """A supervision loss that turns NaN from one step on (counted in calls)."""

    def __init__(self, bad_call: int):
        super().__init__()
        self.bad_call, self.calls = bad_call, 0

    def loss(self, semantic_codebook, quantized_semantic, images):
        self.calls += 1
        loss = super().loss(semantic_codebook, quantized_semantic, images)
        return loss * float("nan") if self.calls >= self.bad_call else loss


def test_a_non_finite_loss_stops_the_run_naming_step_term_and_last_checkpoint(tmp_path):
    from glotok_bench.errors import GlotokError

    with pytest.raises(GlotokError) as caught:
        train(TINY, LOSS, config(max_steps=8), dataset(), run_dir=tmp_path, registry=REGISTRY,
              supervision=NaNAtStep(bad_call=5))  # fmt: skip
    message = str(caught.value)
    assert "step 5" in message and "semantic=nan" in message
    assert str(tmp_path / "checkpoints" / "ckpt-00000003.pt") in message
    # Step 6 was due for a checkpoint: the NaN weights never reached disk.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["ckpt-00000003.pt"]
    # The run resumes from the good checkpoint (here with a finite loss) and finishes.
    resumed = train(TINY, LOSS, config(max_steps=8), dataset(), run_dir=tmp_path,
                    registry=REGISTRY, supervision=FakeSupervision())  # fmt: skip
    assert resumed.resumed_from == 3 and resumed.final_step == 8


def test_discriminator_loss_weight_scales_its_gradient(tmp_path):
    loss = LossConfig(
        perceptual=False, disc_start=0, discriminator=DiscriminatorConfig(base_channels=8, num_layers=2)
    )  # fmt: skip
    norms = {}
    for weight in (0.5, 1.0):
        train(TINY, loss, config(max_steps=1, disc_loss_weight=weight), dataset(),
              run_dir=tmp_path / str(weight), registry=REGISTRY)  # fmt: skip
        norms[weight] = read_log(tmp_path / str(weight) / "metrics.jsonl")[0]["disc_grad_norm"]
    # Same start, same batch: LlamaGen's x0.5 halves the discriminator's gradient (its
    # norm is logged before the 1.0 clip).
    assert norms[0.5] == pytest.approx(norms[1.0] / 2, rel=1e-5)


def test_auto_precision_picks_bf16_only_where_the_gpu_supports_it(monkeypatch):
    from glotok_bench.device import resolve_precision

    cuda = torch.device("cuda", 0)
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    assert resolve_precision("auto", cuda) == "fp32"
    with pytest.raises(ConfigError, match="V100 has no bf16"):
        resolve_precision("bf16", cuda)
