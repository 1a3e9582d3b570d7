"""Typed training settings (no torch import). Defaults follow GloTok Sec. 4.1."""

from __future__ import annotations

from typing import Literal

import attrs


def _positive(_instance: object, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _unit_interval(_instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{attribute.name} must be in [0, 1), got {value!r}")


@attrs.frozen(kw_only=True)
class TrainConfig:
    """Optimisation, precision, logging and checkpointing of one tokenizer training run.

    The paper trains with Adam(0.9, 0.95), lr 2e-4 without decay, global batch 240 for
    150 ImageNet epochs (about 800k steps at 5,338 steps per epoch).
    """

    seed: int = 0
    max_steps: int = attrs.field(default=800_000, validator=_positive)
    batch_size: int = attrs.field(default=240, validator=_positive)  # global, over all ranks
    lr: float = attrs.field(default=2e-4, validator=_positive)
    betas: tuple[float, ...] = attrs.field(default=(0.9, 0.95))
    weight_decay: float = 0.0
    disc_lr: float = attrs.field(default=2e-4, validator=_positive)
    # Global gradient-norm clip (LlamaGen uses 1.0); 0 disables it.
    grad_clip: float = 1.0
    ema: bool = True
    ema_decay: float = attrs.field(default=0.9999, validator=_unit_interval)
    # Warm the EMA up as min(decay, (1 + t) / (10 + t)), so short runs have useful EMA weights.
    ema_warmup: bool = True
    # "auto": bf16 autocast on CUDA, fp32 on CPU (CPU bf16 autocast is slower on most CPUs).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool = True
    compile: bool = False
    checkpoint_every: int = attrs.field(default=5_000, validator=_positive)
    keep_checkpoints: int = attrs.field(default=2, validator=_positive)
    # Per-step metrics are kept on the device and written every `flush_every` steps, so
    # logging costs one host-device sync per flush instead of one per step.
    flush_every: int = attrs.field(default=50, validator=_positive)
    progress: bool = True
    num_workers: int = 0
    # CPU threads for this process; 0 leaves torch's default (one per core). On cores
    # shared with other jobs 1 is often fastest: idle OpenMP threads spin and stall.
    cpu_threads: int = 0
    # Codebook usage is reported over windows of this many steps.
    usage_window: int = attrs.field(default=100, validator=_positive)

    @betas.validator
    def _check_betas(self, _attribute: attrs.Attribute, value: tuple[float, ...]) -> None:
        if len(value) != 2 or not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"betas must be two numbers in [0, 1), got {value!r}")
