"""Generator training on a token directory: AdamW, optional EMA, checkpoints, exact resume.

One process trains on CPU or one GPU; under ``torchrun`` (WORLD_SIZE > 1) each rank
holds a DistributedDataParallel replica and a slice of every global batch, and rank 0
alone writes the log and checkpoints. bf16 autocast is used on CUDA only.

Resume is exact: a checkpoint holds model, EMA, optimiser, step and every RNG state,
and batches depend only on (seed, step) (see :class:`~glotok_bench.generators.tokens.BatchStream`),
so a killed run restarted from its last checkpoint reaches the weights of the
uninterrupted run (bit-identical on CPU).

Run directory: ``config.json`` (resolved config), ``metrics.jsonl`` (one line per
step: loss, grad_norm, lr, wall_s) and ``checkpoints/ckpt-<step>.pt``.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import attrs
import torch
from torch import nn

from glotok_bench.atomic import atomic_write_json
from glotok_bench.config import ComponentChoice, component_field, to_dict
from glotok_bench.device import (
    autocast,
    describe_device,
    distributed_context,
    peak_memory_bytes,
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
from glotok_bench.train.ema import EMA
from glotok_bench.train.metrics_log import MetricsLog, truncate_log
from glotok_bench.train.rng import capture_rng_state, restore_rng_state, seed_everything

CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"


def _positive(_instance: object, attribute: attrs.Attribute, value: float) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class GeneratorTrainConfig:
    """Optimisation of one generator run. Defaults follow LlamaGen/FAR (AdamW 1e-4,
    betas (0.9, 0.95), weight decay 0.05, clip 1.0, batch 256, constant lr).

    xAR's recipe differs: lr 5e-5 x batch / 256 (4e-4 at batch 2048), 100 warmup epochs,
    weight decay 0.02, EMA 0.9999, 800 epochs; set those in its config file.
    """

    seed: int = 0
    max_steps: int = attrs.field(default=10_000, validator=_positive)
    # If set, overrides max_steps: ceil(epochs * token count / batch_size).
    epochs: float | None = attrs.field(default=None, validator=_positive)
    batch_size: int = attrs.field(default=256, validator=_positive)  # global, over all ranks
    lr: float = attrs.field(default=1e-4, validator=_positive)
    betas: tuple[float, ...] = attrs.field(default=(0.9, 0.95))
    weight_decay: float = 0.05
    grad_clip: float = 1.0  # global gradient-norm clip; 0 disables
    warmup_steps: int = 0  # linear warmup from 0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of lr
    ema: bool = False
    ema_decay: float = 0.9999
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = "auto"
    checkpoint_every: int = attrs.field(default=1_000, validator=_positive)
    keep_checkpoints: int = attrs.field(default=2, validator=_positive)
    # Per-step scalars stay on the device and are written every flush_every steps.
    flush_every: int = attrs.field(default=50, validator=_positive)
    # Class count; None: from the token manifest, else the largest label + 1.
    num_classes: int | None = None

    @betas.validator
    def _check_betas(self, _attribute: attrs.Attribute, value: tuple[float, ...]) -> None:
        if len(value) != 2 or not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"betas must be two numbers in [0, 1), got {value!r}")


@attrs.frozen(kw_only=True)
class GeneratorRunConfig:
    """A generator component (registered name + its Config) and how to train it."""

    generator: ComponentChoice = component_field("generator", "far-b")
    train: GeneratorTrainConfig = attrs.field(factory=GeneratorTrainConfig)




def learning_rate(step: int, total: int, cfg: GeneratorTrainConfig) -> float:
    """lr at optimiser step ``step`` (0-based): linear warmup, then constant or cosine."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, cfg: GeneratorTrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices and embeddings only (not norms, biases), as LlamaGen."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def _latest(ckpt_dir: Path) -> list[Path]:
    return sorted(ckpt_dir.glob("ckpt-*.pt"), reverse=True)


def train_generator(
    config: GeneratorRunConfig,
    token_dir: str | Path,
    run_dir: str | Path,
    *,
    resume: bool = True,
    registry: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``config.generator`` on the tokens in ``token_dir``, writing ``run_dir``.

    With ``resume`` the newest readable checkpoint in ``run_dir`` is continued (a fresh
    run starts if there is none); without it an existing run is refused. A checkpoint
    from another generator, config or token set is refused with a CheckpointError.

    Returns: final_step, steps_run, resumed_from, loss_first / loss_last (logged losses
    of the first and last step of this call), losses (up to 200 (step, loss) points of
    the whole run's log), wall_time_s, tokens_per_s (grid positions per second),
    images_per_s, parameters, device (description), precision, world_size,
    peak_memory_bytes, checkpoint, metrics_log.
    """
    cfg = config.train
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / CHECKPOINT_DIR
    metrics_path = run_dir / METRICS_FILE
    rank, world_size, device = distributed_context(pick_device(cfg.device))
    precision = resolve_precision(cfg.precision, device)
    if precision == "bf16" and device.type != "cuda":
        raise ConfigError("precision = 'bf16' needs a CUDA device; use 'auto' or 'fp32' on CPU")
    seed_everything(cfg.seed + rank)

    tokens = TokenSet(token_dir)
    context = tokens.context(num_classes=cfg.num_classes)
    name = config.generator.name
    cls = generator_class(name, registry)
    model = cls(config.generator.config, **context.kwargs())
    tensors = tokens.load(model.data_keys)
    total_steps = cfg.max_steps
    if cfg.epochs is not None:
        total_steps = math.ceil(cfg.epochs * tensors["labels"].shape[0] / cfg.batch_size)
    if hasattr(model, "fit_statistics"):
        model.fit_statistics(tensors)  # replaced by the checkpoint's values on resume
    model.to(device)
    ema = EMA(model, cfg.ema_decay) if cfg.ema else None
    optimizer = make_optimizer(model, cfg)
    token_info = tokens.describe()
    identity = {
        "generator": to_dict(config.generator),
        "context": context.kwargs(),
        "tokenizer_sha256": token_info.get("tokenizer_sha256"),
    }

    step, resumed_from = 0, None
    existing = _latest(ckpt_dir)
    if existing and not resume:
        raise ConfigError(f"{run_dir} already holds a run; resume it or pick another directory")
    for path in existing if resume else []:
        try:
            payload = read_generator_checkpoint(path)
        except CheckpointError as exc:
            warnings.warn(f"skipping unreadable checkpoint: {exc}", stacklevel=2)
            continue
        _check_same_run(payload, identity, path)
        check_architecture(payload, model, str(path))
        model.load_state_dict(payload["model"])
        training = payload.get("training") or {}
        if "optimizer" not in training:
            raise CheckpointError(f"{path} holds no training state; it cannot be resumed")
        optimizer.load_state_dict(training["optimizer"])
        if ema is not None:
            if payload.get("ema") is None:
                raise CheckpointError(f"{path} has no EMA weights but this run keeps an EMA")
            ema.load_state_dict(payload["ema"], training["ema_updates"])
        restore_rng_state(training["rng"])
        step = resumed_from = int(payload["step"])
        if rank == 0:
            truncate_log(metrics_path, step)
        break
    if rank == 0:
        atomic_write_json(
            run_dir / "config.json",
            {
                "run": to_dict(config),
                "tokens": token_info,
                "context": context.kwargs(),
                "total_steps": total_steps,
            },
        )

    trained: nn.Module = model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    stream = BatchStream(tensors, cfg.batch_size, seed=cfg.seed, rank=rank, world_size=world_size)
    log = MetricsLog(metrics_path if rank == 0 else None)
    positions = context.grid_size[0] * context.grid_size[1]

    def save() -> Path | None:
        if rank != 0:
            return None
        training = {
            "optimizer": optimizer.state_dict(),
            "rng": capture_rng_state(),
            "ema_updates": None if ema is None else ema.num_updates,
            "identity": identity,
        }
        path = save_generator_checkpoint(
            ckpt_dir / f"ckpt-{step:08d}.pt",
            model,
            name=name,
            context=context.kwargs(),
            tokens=token_info,
            ema=None if ema is None else ema.state_dict(),
            step=step,
            train_config=to_dict(cfg),
            training=training,
        )
        for old in _latest(ckpt_dir)[cfg.keep_checkpoints :]:
            old.unlink(missing_ok=True)
        return path

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps,
        initial=step,
        disable=not (progress and rank == 0),
        desc="gen-train",
        unit="step",
    )
    start_step, first_loss, last_ckpt = step, None, None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    start = time.perf_counter()
    try:
        while step < total_steps:
            lr = learning_rate(step, total_steps, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = stream.batch(step, device)
            with autocast(device, precision):
                loss = trained(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            if ema is not None:
                ema.update()
            step += 1
            log.append(
                step,
                {"loss": loss.detach(), "grad_norm": grad_norm.detach()},
                lr=lr,
                wall_s=round(time.perf_counter() - start, 3),
            )
            bar.update(1)
            at_end = step >= total_steps
            if (
                step % cfg.flush_every == 0
                or step % cfg.checkpoint_every == 0
                or at_end
                or first_loss is None
            ):
                last = log.flush()
                first_loss = last["loss"] if first_loss is None else first_loss
                bar.set_postfix(loss=f"{last['loss']:.4g}")
            if step % cfg.checkpoint_every == 0 or at_end:
                last_ckpt = save() or last_ckpt
    finally:
        log.flush()
        bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    steps_run = step - start_step
    images = steps_run * cfg.batch_size
    return {
        "final_step": step,
        "steps_run": steps_run,
        "resumed_from": resumed_from,
        "loss_first": first_loss,
        "loss_last": log.last.get("loss"),
        "losses": _loss_curve(metrics_path) if rank == 0 else [],
        "wall_time_s": elapsed,
        "tokens_per_s": images * positions / elapsed if elapsed > 0 and steps_run else float("nan"),
        "images_per_s": images / elapsed if elapsed > 0 and steps_run else float("nan"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": describe_device(device),
        "precision": precision,
        "world_size": world_size,
        "peak_memory_bytes": peak_memory_bytes(device),
        "checkpoint": None if last_ckpt is None else str(last_ckpt),
        "metrics_log": str(metrics_path),
    }


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
    from glotok_bench.train.metrics_log import read_log

    if not path.is_file():
        return []
    rows = [(r["step"], r["loss"]) for r in read_log(path) if isinstance(r.get("loss"), float)]
    stride = max(1, math.ceil(len(rows) / points))
    picked = rows[::stride]
    if rows and picked[-1] != rows[-1]:
        picked.append(rows[-1])
    return picked
