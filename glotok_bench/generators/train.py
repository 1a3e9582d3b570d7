"""Generator training on a token directory: AdamW, lr schedule, optional EMA, exact resume.

The loop around the step (run folder, resume, checkpoints, per-rank RNG, log, non-finite
guard, summary) is :class:`~glotok_bench.train.loop.TrainingLoop`, shared with the
tokenizer trainer; this module supplies the generator's step and checkpoint contents.
Settings: :class:`~glotok_bench.train.config.GeneratorTrainConfig`.

One process trains on CPU or one GPU; under ``torchrun`` (WORLD_SIZE > 1) each rank
holds a DistributedDataParallel replica and a slice of every global batch; ranks draw
their own noise and dropout (seed + rank), and each rank's RNG state is checkpointed.

Resume is exact: a checkpoint holds model, EMA, optimiser, step and every rank's RNG
state, and batches depend only on (seed, step) (see
:class:`~glotok_bench.generators.tokens.BatchStream`), so a killed run restarted from its
last checkpoint reaches the weights of the uninterrupted run (bit-identical on CPU).

Run directory: ``config.json`` (resolved config), ``metrics.jsonl`` (one line per step:
loss, grad_norm, lr, wall_s) and ``checkpoints/ckpt-<step>.pt``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from glotok_bench.atomic import atomic_write_json
from glotok_bench.config import to_dict
from glotok_bench.device import (
    autocast,
    describe_device,
    distributed_context,
    pick_device,
    resolve_precision,
)
from glotok_bench.errors import CheckpointError, ConfigError
from glotok_bench.generators.checkpoint import (
    check_architecture,
    generator_class,
    read_generator_checkpoint,
    save_generator_checkpoint,
)
from glotok_bench.generators.tokens import BatchStream, TokenSet
from glotok_bench.train.config import GeneratorRunConfig, GeneratorTrainConfig
from glotok_bench.train.ema import EMA
from glotok_bench.train.loop import (
    CHECKPOINT_DIR,
    METRICS_FILE,
    LoopSettings,
    StepOutput,
    TrainingLoop,
    TrainingSummary,
)
from glotok_bench.train.metrics_log import read_log
from glotok_bench.train.rng import seed_everything

__all__ = [
    "CHECKPOINT_DIR",
    "METRICS_FILE",
    "GeneratorRunConfig",
    "GeneratorTrainConfig",
    "GeneratorTrainer",
    "GeneratorTrainingSummary",
    "LrSchedule",
    "make_optimizer",
    "train_generator",
]


@attrs.frozen(kw_only=True)
class GeneratorTrainingSummary(TrainingSummary):
    """The loop's summary plus the loss curve and token throughput."""

    loss_first: float | None  # logged loss of the first step of this call
    loss_last: float | None
    loss_curve: list[tuple[int, float]]  # up to 200 (step, loss) points of the whole run
    tokens_per_s: float  # grid positions per second, all ranks
    device_info: dict[str, Any]


@attrs.frozen(kw_only=True)
class LrSchedule:
    """A config's schedule in optimiser steps (epochs converted with the token count)."""

    lr: float
    total_steps: int
    warmup_steps: int
    kind: str
    cosine_start: int
    floor: float

    @classmethod
    def from_config(cls, cfg: GeneratorTrainConfig, total_steps: int, steps_per_epoch: float) -> LrSchedule:
        warmup = cfg.warmup_steps
        if cfg.warmup_epochs is not None:
            warmup = round(cfg.warmup_epochs * steps_per_epoch)
        cosine_start = warmup
        if cfg.lr_schedule == "constant-cosine":
            cosine_start = max(warmup, cfg.cosine_start_steps)
            if cfg.cosine_start_epoch is not None:
                cosine_start = max(warmup, round(cfg.cosine_start_epoch * steps_per_epoch))
        floor = cfg.min_lr if cfg.min_lr is not None else cfg.lr * cfg.min_lr_ratio
        return cls(lr=cfg.lr, total_steps=total_steps, warmup_steps=warmup, kind=cfg.lr_schedule,
                   cosine_start=cosine_start, floor=floor)  # fmt: skip

    def at(self, step: int) -> float:
        """lr at optimiser step ``step`` (0-based)."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.kind == "constant" or step < self.cosine_start:
            return self.lr
        progress = (step - self.cosine_start) / max(1, self.total_steps - self.cosine_start)
        return self.floor + (self.lr - self.floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, cfg: GeneratorTrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices and embeddings only (not norms, biases), as LlamaGen."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


class GeneratorTrainer(TrainingLoop):
    """One generator run on a token directory (see :func:`train_generator`)."""

    def __init__(self, config: GeneratorRunConfig, token_dir: str | Path, *, registry: Any = None,
                 progress: bool = False):  # fmt: skip
        cfg = self.config = config.train
        self.run_config = config
        self.rank, self.world_size, self.device = distributed_context(pick_device(cfg.device))
        self.precision = resolve_precision(cfg.precision, self.device)
        if self.precision == "bf16" and self.device.type != "cuda":
            raise ConfigError("precision = 'bf16' needs a CUDA device; use 'auto' or 'fp32' on CPU")
        self.seed = cfg.seed
        # Ranks draw their own noise and dropout; DDP gives every rank rank 0's initial weights.
        seed_everything(cfg.seed + self.rank)

        self.tokens = TokenSet(token_dir)
        self.context = self.tokens.context(num_classes=cfg.num_classes)
        self.name = config.generator.name
        cls = generator_class(self.name, registry)
        self.model = cls(config.generator.config, **self.context.kwargs())
        self.tensors = self.tokens.load(self.model.data_keys)
        count = self.tensors["labels"].shape[0]
        steps_per_epoch = count / cfg.batch_size
        total_steps = cfg.max_steps if cfg.epochs is None else math.ceil(cfg.epochs * steps_per_epoch)
        self.schedule = LrSchedule.from_config(cfg, total_steps, steps_per_epoch)
        if hasattr(self.model, "fit_statistics"):
            self.model.fit_statistics(self.tensors)  # replaced by the checkpoint's values on resume
        self.model.to(self.device)
        self.trained: nn.Module = self.model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.trained = DistributedDataParallel(self.model, device_ids=ids)
        # After the DDP wrap, which copies rank 0's weights to every rank.
        self.ema = EMA(self.model, cfg.ema_decay, warmup=cfg.ema_warmup) if cfg.ema else None
        self.optimizer = make_optimizer(self.model, cfg)
        self.token_info = self.tokens.describe()
        self.identity = {
            "generator": to_dict(config.generator),
            "context": self.context.kwargs(),
            "tokenizer_sha256": self.token_info.get("tokenizer_sha256"),
        }
        self.step = 0
        self.settings = LoopSettings(
            total_steps=total_steps,
            batch_size=cfg.batch_size,
            checkpoint_every=cfg.checkpoint_every,
            keep_checkpoints=cfg.keep_checkpoints,
            flush_every=cfg.flush_every,
            progress=progress,
            label="gen-train",
            progress_keys=("loss",),
        )

    # -- what the loop needs ----------------------------------------------------------------

    def batches(self, start_step: int) -> Iterator[dict[str, torch.Tensor]]:
        stream = BatchStream(self.tensors, self.config.batch_size, seed=self.config.seed,
                             rank=self.rank, world_size=self.world_size)  # fmt: skip
        step = start_step
        while True:
            yield stream.batch(step, self.device)
            step += 1

    def optimisation_step(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        lr = self.schedule.at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        with autocast(self.device, self.precision):
            loss = self.trained(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.config.grad_clip if self.config.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        self.step += 1
        return StepOutput({"loss": loss.detach(), "grad_norm": grad_norm.detach()}, {"lr": lr})

    def read_checkpoint(self, path: Path) -> dict[str, Any]:
        return read_generator_checkpoint(path)

    def load_training_state(self, path: Path, payload: dict[str, Any]) -> None:
        _check_same_run(payload, self.identity, path)
        check_architecture(payload, self.model, str(path))
        training = payload.get("training") or {}
        if "optimizer" not in training:
            raise CheckpointError(f"{path} holds no training state; it cannot be resumed")
        if self.ema is not None and payload.get("ema") is None:
            raise CheckpointError(f"{path} has no EMA weights but this run keeps an EMA")
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(training["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(payload["ema"], training["ema_updates"])

    def write_checkpoint(self, path: Path, rng_states: list[dict[str, Any]]) -> Path:
        training = {
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_states,
            "ema_updates": None if self.ema is None else self.ema.num_updates,
            "identity": self.identity,
        }
        return save_generator_checkpoint(
            path,
            self.model,
            name=self.name,
            context=self.context.kwargs(),
            tokens=self.token_info,
            ema=None if self.ema is None else self.ema.state_dict(),
            step=self.step,
            train_config=to_dict(self.config),
            training=training,
        )

    def on_start(self, run_dir: Path) -> None:
        if self.rank == 0:
            atomic_write_json(
                run_dir / "config.json",
                {
                    "run": to_dict(self.run_config),
                    "tokens": self.token_info,
                    "context": self.context.kwargs(),
                    "total_steps": self.settings.total_steps,
                },
            )

    # -- the run ----------------------------------------------------------------------------

    def fit(self, run_dir: str | Path, *, resume: bool = True, on_step_end: Any = None) -> GeneratorTrainingSummary:
        loop = self.run_loop(run_dir, resume=resume, on_step_end=on_step_end)
        metrics_path = Path(loop["metrics_log"])
        curve = _loss_curve(metrics_path) if self.rank == 0 else []
        positions = self.context.grid_size[0] * self.context.grid_size[1]
        images_per_s = loop["images_per_s"]
        return GeneratorTrainingSummary(
            **loop,
            device=str(self.device),
            parameters=sum(p.numel() for p in self.model.parameters()),
            loss_first=self.first_logged.get("loss"),
            loss_last=loop["losses"].get("loss"),
            loss_curve=curve,
            tokens_per_s=images_per_s * positions,
            device_info=describe_device(self.device),
        )


def train_generator(
    config: GeneratorRunConfig,
    token_dir: str | Path,
    run_dir: str | Path,
    *,
    resume: bool = True,
    registry: Any = None,
    progress: bool = False,
    on_step_end: Any = None,
) -> GeneratorTrainingSummary:
    """Train ``config.generator`` on the tokens in ``token_dir``, writing ``run_dir``.

    With ``resume`` the newest readable checkpoint in ``run_dir`` is continued (a fresh
    run starts if there is none); without it an existing run is refused. A checkpoint
    from another generator, config or token set is refused with a CheckpointError, and
    so is a folder whose checkpoints are all unreadable.
    """
    trainer = GeneratorTrainer(config, token_dir, registry=registry, progress=progress)
    return trainer.fit(run_dir, resume=resume, on_step_end=on_step_end)


def _check_same_run(payload: dict[str, Any], identity: dict[str, Any], path: Path) -> None:
    """Refuse to resume from a checkpoint of another generator, config or token set."""
    saved = (payload.get("training") or {}).get("identity")
    if saved is None:
        raise CheckpointError(f"{path} holds no training state; it cannot be resumed")
    for key in identity:
        if _normalise(saved.get(key)) != _normalise(identity[key]):
            raise CheckpointError(
                f"{path} belongs to another run: its {key} is {saved.get(key)!r}, this run's is "
                f"{identity[key]!r}. Use a new run directory."
            )


def _normalise(value: Any) -> Any:
    """Tuples and lists compare equal (a checkpoint stores tuples as lists)."""
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    return value


def _loss_curve(path: Path, points: int = 200) -> list[tuple[int, float]]:
    if not path.is_file():
        return []
    rows = [(r["step"], r["loss"]) for r in read_log(path) if isinstance(r.get("loss"), float)]
    stride = max(1, math.ceil(len(rows) / points))
    picked = rows[::stride]
    if rows and picked[-1] != rows[-1]:
        picked.append(rows[-1])
    return picked
