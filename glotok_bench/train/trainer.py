"""Tokenizer training: Eq. 13 objective, PatchGAN, EMA, checkpoints, exact resume.

The loop around the step (run folder, resume, checkpoints, RNG, log, non-finite guard,
summary) is :class:`~glotok_bench.train.loop.TrainingLoop`, shared with the generator
trainer; this module supplies the tokenizer's step and what its checkpoint holds.

One process trains on CPU or one GPU; under ``torchrun`` (WORLD_SIZE > 1) each rank
holds a DistributedDataParallel replica of the tokenizer *and* the semantic supervision
(so a trained supervision head's gradients are all-reduced too) and a slice of every
global batch. Codebook hit counters are per rank (DDP does not broadcast buffers here)
and summed over ranks when usage is reported.

Resume is exact: a checkpoint holds model, EMA, both optimisers, discriminator,
semantic-supervision state, step and every rank's RNG state, and the data order depends
only on (seed, step), so a killed run restarted from its last checkpoint reaches
bit-identical weights on CPU (on GPU, up to the nondeterminism of CUDA kernels).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from glotok_bench.config import to_dict
from glotok_bench.data.imagefolder import SkippedImages
from glotok_bench.device import autocast, distributed_context, pick_device, resolve_precision
from glotok_bench.errors import CheckpointError, ConfigError
from glotok_bench.registry import Registry
from glotok_bench.tokenizer.checkpoint import check_compatible, read_checkpoint, save_checkpoint
from glotok_bench.tokenizer.config import LossConfig, TokenizerConfig
from glotok_bench.tokenizer.discriminator import PatchDiscriminator
from glotok_bench.tokenizer.losses import (
    build_perceptual,
    describe_perceptual,
    generator_loss,
    hinge_discriminator_loss,
)
from glotok_bench.tokenizer.model import build_tokenizer
from glotok_bench.train.config import TrainConfig
from glotok_bench.train.data import image_batches
from glotok_bench.train.ema import EMA
from glotok_bench.train.loop import (
    CHECKPOINT_DIR,
    METRICS_FILE,
    LoopSettings,
    StepOutput,
    TrainingLoop,
    TrainingSummary,
)
from glotok_bench.train.rng import seed_everything

__all__ = ["CHECKPOINT_DIR", "METRICS_FILE", "TokenizerTrainingSummary", "Trainer", "train"]


@attrs.frozen(kw_only=True)
class TokenizerTrainingSummary(TrainingSummary):
    """The loop's summary plus which losses were on and which weights the run keeps."""

    perceptual_loss: bool
    perceptual_note: str
    adversarial_loss: bool
    supervision: dict[str, Any] | None
    ema: bool  # the checkpoints hold EMA weights (evaluation reads them unless told otherwise)
    unreadable_images: dict[str, Any]


def _precision(train: TrainConfig, device: torch.device) -> str:
    """ "fp32" or "bf16" (autocast). bf16 autocast is used only on CUDA."""
    if device.type != "cuda" and train.precision == "bf16":
        raise ConfigError("precision = 'bf16' needs a CUDA device; use 'auto' or 'fp32' on CPU")
    return resolve_precision(train.precision, device)


class SupervisedTokenizer(nn.Module):
    """The tokenizer and its semantic supervision as one module, so one DDP wrapper
    all-reduces the gradients of both (a supervision head outside DDP would drift apart
    across ranks). The supervision loss runs outside autocast: histogram-style losses
    need fp32."""

    def __init__(self, tokenizer: nn.Module, supervision: Any):
        super().__init__()
        self.tokenizer = tokenizer
        self.supervision = supervision  # registered as a submodule when it is an nn.Module

    def forward(self, images: torch.Tensor) -> tuple[Any, torch.Tensor | None]:
        output = self.tokenizer(images)
        if self.supervision is None:
            return output, None
        with torch.autocast(images.device.type, enabled=False):
            semantic = self.supervision.loss(
                self.tokenizer.semantic_codebook(),
                output.encoding.branches["semantic"].quantized.float(),
                images,
            )
        return output, semantic


class Trainer(TrainingLoop):
    """Owns the models, optimisers and step counter of one tokenizer training run.

    ``supervision``: any object with ``loss(semantic_codebook, quantized_semantic
    [B, d, h, w], images) -> Tensor`` (unweighted) and ``describe() -> dict``; if it is
    an ``nn.Module`` its parameters are trained and checkpointed with the tokenizer. It
    must live on this rank's device (build it after :func:`distributed_context`).
    """

    def __init__(
        self,
        tokenizer_config: TokenizerConfig,
        loss_config: LossConfig,
        train_config: TrainConfig,
        *,
        device: str = "cpu",
        supervision: Any = None,
        registry: Registry | None = None,
    ):
        self.tokenizer_config, self.loss_config, self.config = (
            tokenizer_config,
            loss_config,
            train_config,
        )
        self.rank, self.world_size, self.device = distributed_context(pick_device(device))
        self.precision = _precision(train_config, self.device)
        if train_config.batch_size % self.world_size:
            raise ConfigError(
                f"batch_size {train_config.batch_size} is not divisible by {self.world_size} ranks"
            )
        if self.device.type == "cpu" and train_config.cpu_threads > 0:
            torch.set_num_threads(train_config.cpu_threads)
        self.seed = train_config.seed
        seed_everything(train_config.seed)
        self.settings = LoopSettings(
            total_steps=train_config.max_steps,
            batch_size=train_config.batch_size,
            checkpoint_every=train_config.checkpoint_every,
            keep_checkpoints=train_config.keep_checkpoints,
            flush_every=train_config.flush_every,
            progress=train_config.progress,
            label="train",
            progress_keys=("rec", "total"),
        )
        self.memory_format = (
            torch.channels_last if train_config.channels_last else torch.contiguous_format
        )

        self.model = build_tokenizer(tokenizer_config, registry=registry).to(
            self.device, memory_format=self.memory_format
        )
        self.perceptual = build_perceptual(loss_config)
        if self.perceptual is not None:
            self.perceptual.to(self.device, memory_format=self.memory_format)
        self.discriminator = None
        if loss_config.adversarial_weight > 0:
            self.discriminator = PatchDiscriminator(
                loss_config.discriminator, resolution=tokenizer_config.resolution
            ).to(self.device, memory_format=self.memory_format)
        self.supervision = supervision
        if supervision is not None and self.model.semantic_codebook() is None:
            raise ConfigError(
                "semantic supervision needs a quantizer with a 'semantic' codebook (e.g. 'dual')"
            )

        generator_params = list(self.model.parameters())
        if isinstance(supervision, nn.Module):
            generator_params += [p for p in supervision.parameters() if p.requires_grad]
        self._generator_params = generator_params
        self.optimizer = self._adam(generator_params, train_config.lr)
        self.disc_optimizer = (
            self._adam(list(self.discriminator.parameters()), train_config.disc_lr)
            if self.discriminator
            else None
        )
        self.ema = (
            EMA(self.model, train_config.ema_decay, warmup=train_config.ema_warmup)
            if train_config.ema
            else None
        )
        self.step = 0
        self.skipped = SkippedImages()

        # Wrappers used for the forward passes; the bare modules keep the state.
        self._forward_model: nn.Module = SupervisedTokenizer(self.model, supervision)
        self._forward_disc: nn.Module | None = self.discriminator
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # No buffer sync at each forward: every rank keeps its own codebook hit counters
            # (rank 0's would overwrite them); they are summed when usage is reported.
            self._forward_model = DDP(self._forward_model, device_ids=ids, forward_sync_buffers=False)
            if self.discriminator is not None:
                self._forward_disc = DDP(self.discriminator, device_ids=ids)
        if train_config.compile:
            self._forward_model = torch.compile(self._forward_model)

    def _adam(self, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        # fused Adam: one kernel for the whole update on CPU and CUDA (was the fastest here).
        return torch.optim.Adam(
            params,
            lr=lr,
            betas=tuple(self.config.betas),
            weight_decay=self.config.weight_decay,
            fused=True,
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.precision)

    @property
    def gan_active(self) -> bool:
        return self.discriminator is not None and self.step >= self.loss_config.disc_start

    # -- what the loop needs ----------------------------------------------------------------

    def batches(self, start_step: int) -> Iterator[torch.Tensor]:
        return image_batches(
            self._data,
            batch_size=self.config.batch_size,
            seed=self.config.seed,
            start_step=start_step,
            rank=self.rank,
            world_size=self.world_size,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
            skipped=self.skipped,
            augment=self.config.augment,
            crop_scale=self.config.crop_scale,
        )

    def optimisation_step(self, images: torch.Tensor) -> StepOutput:
        """One generator (+ discriminator) update on images [b, 3, H, W] in [-1, 1].

        Logged scalars are detached 0-dim tensors (loss terms, usage stats) still on the
        device; every ``usage_window`` steps the window's codebook usage is added.
        """
        x = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        use_gan = self.gan_active
        self.model.train()
        if self.perceptual is not None:
            self.perceptual.train()  # its training dropout only; see LossConfig.lpips_dropout
        with self._autocast():
            output, semantic = self._forward_model(x)
            fake_logits = None
            if use_gan:
                # The generator's GAN term needs no discriminator gradients: freeze it and
                # bypass its DDP wrapper (which would wait for gradients that never come).
                self.discriminator.requires_grad_(False)
                fake_logits = self.discriminator(output.reconstruction)
            total, terms = generator_loss(
                self.loss_config,
                x,
                output,
                perceptual=self.perceptual,
                fake_logits=fake_logits,
                semantic=semantic,
                last_layer=self.model.decoder_last_layer() if use_gan else None,
            )
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.config.grad_clip > 0:
            terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(
                self._generator_params, self.config.grad_clip, foreach=True
            )
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()

        if use_gan:
            self.discriminator.requires_grad_(True)
            fake = output.reconstruction.detach()
            with self._autocast():
                d_loss = hinge_discriminator_loss(
                    self._forward_disc(x).float(), self._forward_disc(fake).float()
                )
            self.disc_optimizer.zero_grad(set_to_none=True)
            (self.config.disc_loss_weight * d_loss).backward()
            if self.config.disc_grad_clip > 0:
                terms["disc_grad_norm"] = torch.nn.utils.clip_grad_norm_(
                    self.discriminator.parameters(), self.config.disc_grad_clip, foreach=True
                )
            self.disc_optimizer.step()
            terms["disc"] = d_loss
        self.step += 1
        scalars = {k: v.detach() for k, v in terms.items()}
        scalars.update(output.stats)
        if self.step % self.config.usage_window == 0:
            self._sum_hits_over_ranks()
            scalars.update(self.model.window_usage(reset=True))
        return StepOutput(scalars, {"gan": use_gan})

    def _hit_counters(self) -> list[torch.Tensor]:
        return [buf for name, buf in self.model.named_buffers() if name.endswith("hits")]

    def _sum_hits_over_ranks(self) -> None:
        """Every rank's codebook hit counters become the sum over ranks (collective)."""
        if self.world_size == 1:
            return
        import torch.distributed as dist

        for hits in self._hit_counters():
            dist.all_reduce(hits)

    def before_checkpoint(self) -> None:
        # Rank 0 saves the hits of the whole open usage window; the others restart theirs
        # from zero, so the summed window is unchanged and a resume reports it exactly.
        self._sum_hits_over_ranks()
        if self.rank != 0:
            for hits in self._hit_counters():
                hits.zero_()

    def after_restore(self) -> None:
        if self.rank != 0:  # the checkpoint's hits are already the sum over ranks
            for hits in self._hit_counters():
                hits.zero_()

    def training_state(self) -> dict[str, Any]:
        """Everything besides model and EMA weights that resume needs (plain data + tensors)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "discriminator": None
            if self.discriminator is None
            else self.discriminator.state_dict(),
            "disc_optimizer": None
            if self.disc_optimizer is None
            else self.disc_optimizer.state_dict(),
            "supervision": self.supervision.state_dict()
            if isinstance(self.supervision, nn.Module)
            else None,
            "ema_updates": None if self.ema is None else self.ema.num_updates,
            "train_config": to_dict(self.config),
            "loss_config": to_dict(self.loss_config),
        }

    def write_checkpoint(self, path: Path, rng_states: list[dict[str, Any]]) -> Path:
        return save_checkpoint(
            path,
            self.model,
            ema=None if self.ema is None else self.ema.state_dict(),
            step=self.step,
            training={**self.training_state(), "rng": rng_states},
        )

    def read_checkpoint(self, path: Path) -> dict[str, Any]:
        return read_checkpoint(path)

    def load_training_state(self, path: Path, payload: dict[str, Any]) -> None:
        """Load a checkpoint written by :meth:`write_checkpoint`; it must match this run."""
        check_compatible(payload, self.model, str(path))
        training = payload.get("training")
        if not training:
            raise CheckpointError(f"{path} holds no training state; it cannot be resumed")
        if (training["discriminator"] is None) != (self.discriminator is None):
            raise CheckpointError(
                f"{path}: the discriminator setting differs from this run's (adversarial_weight)"
            )
        self.model.load_state_dict(payload["model"])
        if self.ema is not None:
            if payload.get("ema") is None:
                raise CheckpointError(f"{path} has no EMA weights but this run keeps an EMA")
            self.ema.load_state_dict(payload["ema"], training["ema_updates"])
        self.optimizer.load_state_dict(training["optimizer"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(training["discriminator"])
            self.disc_optimizer.load_state_dict(training["disc_optimizer"])
        if isinstance(self.supervision, nn.Module) and training.get("supervision") is not None:
            self.supervision.load_state_dict(training["supervision"])

    # -- the run ----------------------------------------------------------------------------

    def fit(
        self,
        data: Any,
        run_dir: str | Path,
        *,
        resume: bool = True,
        on_step_end: Callable[[int, Trainer], None] | None = None,
    ) -> TokenizerTrainingSummary:
        """Train until ``max_steps``; see :func:`train`."""
        self._data = data
        loop = self.run_loop(run_dir, resume=resume, on_step_end=on_step_end)
        return TokenizerTrainingSummary(
            **loop,
            device=str(self.device),
            parameters=sum(p.numel() for p in self.model.parameters()),
            perceptual_loss=self.perceptual is not None,
            perceptual_note=describe_perceptual(self.loss_config, self.perceptual),
            adversarial_loss=self.discriminator is not None,
            supervision=None if self.supervision is None else self.supervision.describe(),
            ema=self.ema is not None,
            unreadable_images=self.skipped.as_record(),
        )


def train(
    tokenizer_config: TokenizerConfig,
    loss_config: LossConfig,
    train_config: TrainConfig,
    data: Any,
    *,
    run_dir: str | Path,
    device: str = "cpu",
    supervision: Any = None,
    resume: bool = True,
    registry: Registry | None = None,
    on_step_end: Callable[[int, Trainer], None] | None = None,
) -> TokenizerTrainingSummary:
    """Train a tokenizer; resumes from ``run_dir/checkpoints`` when a checkpoint is there.

    ``data``: a map-style Dataset yielding ``(image [3, H, W] in [-1, 1], label)`` or an
    iterable of batches (``images`` or ``(images, labels)``). Writes
    ``run_dir/metrics.jsonl`` (one JSON line per step) and ``run_dir/checkpoints/``.
    """
    trainer = Trainer(
        tokenizer_config,
        loss_config,
        train_config,
        device=device,
        supervision=supervision,
        registry=registry,
    )
    return trainer.fit(data, run_dir, resume=resume, on_step_end=on_step_end)
