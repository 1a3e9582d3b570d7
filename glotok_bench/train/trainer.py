"""Tokenizer training: Eq. 13 objective, PatchGAN, EMA, checkpoints, exact resume.

One process trains on CPU or one GPU; under ``torchrun`` (WORLD_SIZE > 1) each rank
holds a DistributedDataParallel replica and a slice of every global batch. Rank 0 alone
writes the metrics log and checkpoints.

Resume is exact: a checkpoint holds model, EMA, both optimisers, discriminator,
semantic-supervision state, step and every RNG state, and the data order depends only on
(seed, step), so a killed run restarted from its last checkpoint reaches bit-identical
weights on CPU (on GPU, up to the nondeterminism of CUDA kernels).
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glotok_bench.config import to_dict
from glotok_bench.data.imagefolder import SkippedImages
from glotok_bench.device import (
    autocast,
    distributed_context,
    peak_memory_bytes,
    pick_device,
    resolve_precision,
)
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
from glotok_bench.train.metrics_log import MetricsLog, truncate_log
from glotok_bench.train.rng import capture_rng_state, restore_rng_state, seed_everything

CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"




def _precision(train: TrainConfig, device: torch.device) -> str:
    """ "fp32" or "bf16" (autocast). bf16 autocast is used only on CUDA."""
    if device.type != "cuda" and train.precision == "bf16":
        raise ConfigError("precision = 'bf16' needs a CUDA device; use 'auto' or 'fp32' on CPU")
    return resolve_precision(train.precision, device)


class Trainer:
    """Owns the models, optimisers and step counter of one training run.

    ``supervision``: any object with ``loss(semantic_codebook, quantized_semantic
    [B, d, h, w], images) -> Tensor`` (unweighted) and ``describe() -> dict``; if it is
    an ``nn.Module`` its parameters are trained and checkpointed with the tokenizer.
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
        seed_everything(train_config.seed)
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

        # Wrappers used for the forward passes; the bare modules keep the state.
        self._forward_model: nn.Module = self.model
        self._forward_disc: nn.Module | None = self.discriminator
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._forward_model = DDP(self.model, device_ids=ids)
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

    # -- one optimisation step ------------------------------------------------------------

    def train_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """One generator (+ discriminator) update on images [b, 3, H, W] in [-1, 1].

        Returns detached 0-dim tensors (loss terms, usage stats) still on the device.
        """
        x = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        use_gan = self.gan_active
        self.model.train()
        with self._autocast():
            output = self._forward_model(x)
            fake_logits = None
            if use_gan:
                # The generator's GAN term needs no discriminator gradients: freeze it and
                # bypass its DDP wrapper (which would wait for gradients that never come).
                self.discriminator.requires_grad_(False)
                fake_logits = self.discriminator(output.reconstruction)
        semantic = None
        if self.supervision is not None:
            # Outside autocast: histogram-style losses need fp32.
            semantic = self.supervision.loss(
                self.model.semantic_codebook(),
                output.encoding.branches["semantic"].quantized.float(),
                x,
            )
        with self._autocast():
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
            d_loss.backward()
            self.disc_optimizer.step()
            terms["disc"] = d_loss
        self.step += 1
        terms = {k: v.detach() for k, v in terms.items()}
        terms.update(output.stats)
        return terms

    # -- state ----------------------------------------------------------------------------

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
            "rng": capture_rng_state(),
            "train_config": to_dict(self.config),
            "loss_config": to_dict(self.loss_config),
        }

    def save(self, path: str | Path) -> Path:
        return save_checkpoint(
            path,
            self.model,
            ema=None if self.ema is None else self.ema.state_dict(),
            step=self.step,
            training=self.training_state(),
        )

    def restore(self, path: str | Path, payload: dict[str, Any] | None = None) -> None:
        """Load a checkpoint written by :meth:`save`; it must match this run's architecture.

        ``payload``: the already-read checkpoint (see :func:`read_checkpoint`), if at hand.
        """
        payload = read_checkpoint(path) if payload is None else payload
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
        restore_rng_state(training["rng"])
        self.step = int(payload["step"])

    # -- the loop -------------------------------------------------------------------------

    def fit(
        self,
        data: Any,
        run_dir: str | Path,
        *,
        resume: bool = True,
        on_step_end: Callable[[int, Trainer], None] | None = None,
    ) -> dict[str, Any]:
        """Train until ``max_steps``; returns the run summary (see :func:`train`)."""
        cfg = self.config
        run_dir = Path(run_dir)
        ckpt_dir = run_dir / CHECKPOINT_DIR
        metrics_path = run_dir / METRICS_FILE
        resumed_from = None
        if resume:
            latest = _latest_checkpoint(ckpt_dir, self, metrics_path if self.rank == 0 else None)
            if latest is not None:
                resumed_from = self.step
        elif self.rank == 0 and (metrics_path.exists() or any(ckpt_dir.glob("ckpt-*.pt"))):
            raise ConfigError(f"{run_dir} already holds a run; resume it or pick another directory")
        log = MetricsLog(metrics_path if self.rank == 0 else None, reduce=self._mean_over_ranks)
        skipped = SkippedImages()
        batches = image_batches(
            data,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            start_step=self.step,
            rank=self.rank,
            world_size=self.world_size,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            skipped=skipped,
        )
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        progress = _progress(cfg, self.step, enabled=cfg.progress and self.rank == 0)
        start_step, images_seen, last_ckpt = self.step, 0, None
        start = time.perf_counter()
        try:
            while self.step < cfg.max_steps:
                images = next(batches)
                terms = self.train_step(images)
                images_seen += images.shape[0]
                extra: dict[str, Any] = {"wall_s": round(time.perf_counter() - start, 3)}
                if self.step % cfg.usage_window == 0:
                    terms.update(self.model.window_usage(reset=True))
                log.append(self.step, terms, gan=self.gan_active, **extra)
                progress.update(1)
                at_end = self.step >= cfg.max_steps
                if (
                    self.step % cfg.flush_every == 0
                    or self.step % cfg.checkpoint_every == 0
                    or at_end
                ):
                    last = log.flush()
                    progress.set_postfix(
                        {k: f"{last[k]:.4g}" for k in ("rec", "total") if k in last}
                    )
                if self.step % cfg.checkpoint_every == 0 or at_end:
                    last_ckpt = self._checkpoint(ckpt_dir)
                if on_step_end is not None:
                    on_step_end(self.step, self)
        finally:
            log.flush()
            progress.close()
        elapsed = time.perf_counter() - start
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        peak = peak_memory_bytes(self.device)
        peak_kind = "cuda_max_allocated" if self.device.type == "cuda" else "process_max_rss"
        steps_run = self.step - start_step
        return {
            "final_step": self.step,
            "steps_run": steps_run,
            "resumed_from": resumed_from,
            "losses": {k: v for k, v in log.last.items() if k not in ("step", "gan", "wall_s")},
            "wall_time_s": elapsed,
            "images_per_s": images_seen * self.world_size / elapsed
            if elapsed > 0
            else float("nan"),
            "peak_memory_bytes": int(peak),
            "peak_memory_kind": peak_kind,
            "perceptual_loss": self.perceptual is not None,
            "perceptual_note": describe_perceptual(self.loss_config, self.perceptual),
            "adversarial_loss": self.discriminator is not None,
            "supervision": None if self.supervision is None else self.supervision.describe(),
            "device": str(self.device),
            "precision": self.precision,
            "world_size": self.world_size,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "checkpoint": None if last_ckpt is None else str(last_ckpt),
            "metrics_log": str(metrics_path),
            "unreadable_images": skipped.as_record(),
        }

    def _mean_over_ranks(self, values: torch.Tensor) -> torch.Tensor:
        """Logged values averaged over data-parallel ranks (identity on one process)."""
        if self.world_size == 1:
            return values
        import torch.distributed as dist

        values = values.clone()
        dist.all_reduce(values)  # SUM: gloo has no AVG
        return values / self.world_size

    def _checkpoint(self, ckpt_dir: Path) -> Path | None:
        if self.rank != 0:
            return None
        path = self.save(ckpt_dir / f"ckpt-{self.step:08d}.pt")
        for old in sorted(ckpt_dir.glob("ckpt-*.pt"))[: -self.config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path


def _latest_checkpoint(ckpt_dir: Path, trainer: Trainer, metrics_path: Path | None) -> Path | None:
    """Restore the newest readable checkpoint; None when the run has none yet.

    Only an unreadable file (torn, corrupt) is skipped for an older one. A readable
    checkpoint that does not fit this run's settings is an error: silently starting over
    would overwrite the run's checkpoints.
    """
    candidates = sorted(ckpt_dir.glob("ckpt-*.pt"), reverse=True)
    for path in candidates:
        try:
            payload = read_checkpoint(path)
        except CheckpointError as exc:
            warnings.warn(f"skipping unreadable checkpoint: {exc}", stacklevel=3)
            continue
        trainer.restore(path, payload)
        if metrics_path is not None:
            truncate_log(metrics_path, trainer.step)
        return path
    if candidates:
        raise CheckpointError(
            f"{ckpt_dir} holds checkpoints but none is readable; nothing was overwritten"
        )
    return None


def _progress(cfg: TrainConfig, initial: int, *, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=cfg.max_steps,
        initial=initial,
        disable=not enabled,
        desc="train",
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0,
        file=sys.stderr,
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
) -> dict[str, Any]:
    """Train a tokenizer; resumes from ``run_dir/checkpoints`` when a checkpoint is there.

    ``data``: a map-style Dataset yielding ``(image [3, H, W] in [-1, 1], label)`` or an
    iterable of batches (``images`` or ``(images, labels)``). Writes
    ``run_dir/metrics.jsonl`` (one JSON line per step) and ``run_dir/checkpoints/``.

    Returns the run summary: final_step, steps_run, resumed_from, losses (last step),
    wall_time_s, images_per_s, peak_memory_bytes (+ kind), perceptual_loss (bool) and
    perceptual_note, device, precision, world_size, parameters, checkpoint, metrics_log.
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
