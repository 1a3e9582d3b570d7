"""Typed training settings (no torch import): the tokenizer's (defaults follow GloTok
Sec. 4.1 and LlamaGen's vq_train.py) and the generators' (LlamaGen/FAR, xAR's recipe as
options). The loops that use them are ``train/trainer.py`` and ``generators/train.py``.
"""

from __future__ import annotations

import math
from typing import Literal

import attrs

from glotok_bench.config import ComponentChoice, component_field
from glotok_bench.validators import non_negative, positive


def _unit_interval(_instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{attribute.name} must be in [0, 1), got {value!r}")


def _check_betas(_instance: object, _attribute: attrs.Attribute, value: tuple[float, ...]) -> None:
    if len(value) != 2 or not all(0.0 <= b < 1.0 for b in value):
        raise ValueError(f"betas must be two numbers in [0, 1), got {value!r}")


def _check_crop_scale(_instance: object, _attribute: attrs.Attribute, value: tuple) -> None:
    if len(value) != 2 or not 1.0 <= value[0] <= value[1] or not math.isfinite(value[1]):
        raise ValueError(f"crop_scale must be two numbers 1 <= low <= high, got {value!r}")


@attrs.frozen(kw_only=True)
class TrainConfig:
    """Optimisation, precision, logging and checkpointing of one tokenizer training run.

    The paper trains with Adam(0.9, 0.95), lr 2e-4 without decay, global batch 240 for
    150 ImageNet epochs (about 800k steps at 5,338 steps per epoch).
    """

    seed: int = 0
    max_steps: int = attrs.field(default=800_000, validator=positive)
    batch_size: int = attrs.field(default=240, validator=positive)  # global, over all ranks
    lr: float = attrs.field(default=2e-4, validator=positive)
    betas: tuple[float, ...] = attrs.field(default=(0.9, 0.95), validator=_check_betas)
    weight_decay: float = attrs.field(default=0.0, validator=non_negative)
    disc_lr: float = attrs.field(default=2e-4, validator=positive)
    # Global gradient-norm clip (LlamaGen uses 1.0); 0 disables it.
    grad_clip: float = attrs.field(default=1.0, validator=non_negative)
    # The discriminator's own clip and loss weight. LlamaGen (vq_train.py) clips it at
    # max_grad_norm 1.0 and multiplies its (already halved) hinge loss by disc_weight 0.5
    # (vq_loss.py); 0 disables the clip.
    disc_grad_clip: float = attrs.field(default=1.0, validator=non_negative)
    disc_loss_weight: float = attrs.field(default=0.5, validator=positive)
    # An EMA of the weights, saved beside them; evaluation reads the EMA weights when a
    # checkpoint has them (`eval --weights model` reads the trained ones) and records which.
    # LlamaGen and FQGAN train without EMA (their --ema is off by default) and evaluate the
    # trained weights: `ema = false` reproduces that.
    ema: bool = True
    ema_decay: float = attrs.field(default=0.9999, validator=_unit_interval)
    # Warm the EMA up as min(decay, (1 + t) / (10 + t)), so short runs have useful EMA weights.
    ema_warmup: bool = True
    # "auto": bf16 autocast on a CUDA device with bf16 support, else fp32 (CPU bf16 autocast
    # is slower on most CPUs; pre-Ampere GPUs have no bf16).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool = True
    compile: bool = False
    checkpoint_every: int = attrs.field(default=5_000, validator=positive)
    keep_checkpoints: int = attrs.field(default=2, validator=positive)
    # Per-step metrics are kept on the device and written every `flush_every` steps, so
    # logging costs one host-device sync per flush instead of one per step.
    flush_every: int = attrs.field(default=50, validator=positive)
    progress: bool = True
    num_workers: int = 0
    # CPU threads for this process; 0 leaves torch's default (one per core). On cores
    # shared with other jobs 1 is often fastest: idle OpenMP threads spin and stall.
    cpu_threads: int = 0
    # Codebook usage is reported over windows of this many steps.
    usage_window: int = attrs.field(default=100, validator=positive)
    # Training-image augmentation (train/augment.py). "crop-flip" is the base code's
    # (LlamaGen/FQGAN; the paper is silent): short side resized to a random crop_scale
    # multiple of the resolution (256-320 px at 256), a random crop, a fresh flip every
    # epoch, keyed on (seed, epoch, index). The presets (configs/glotok.toml and all that
    # extend it) turn it on; the default "none" leaves data as the dataset yields it
    # (centre crop, its fixed per-image flip), so code that builds a TrainConfig itself
    # trains on exactly the images it passes.
    augment: Literal["none", "crop-flip"] = "none"
    crop_scale: tuple[float, float] = attrs.field(default=(1.0, 1.25), validator=_check_crop_scale)


@attrs.frozen(kw_only=True)
class GeneratorTrainConfig:
    """Optimisation of one generator run. Defaults follow LlamaGen/FAR (AdamW 1e-4,
    betas (0.9, 0.95), weight decay 0.05, clip 1.0, batch 256, constant lr, no EMA).

    xAR's recipe (its main_mar.py / util/lr_sched.py) in these fields: betas (0.9, 0.96),
    weight_decay 0.02, lr 4e-4 at batch 2048, warmup_epochs 100, lr_schedule
    "constant-cosine" with cosine_start_epoch 600 and min_lr 1e-5 at epochs 800,
    ema true with ema_decay 0.9999, grad_clip 1.0.
    """

    seed: int = 0
    max_steps: int = attrs.field(default=10_000, validator=positive)
    # Training length in passes over the token set; when set it replaces max_steps:
    # ceil(epochs * token count / batch_size) steps.
    epochs: float | None = attrs.field(default=None, validator=positive)
    batch_size: int = attrs.field(default=256, validator=positive)  # global, over all ranks
    lr: float = attrs.field(default=1e-4, validator=positive)
    betas: tuple[float, ...] = attrs.field(default=(0.9, 0.95), validator=_check_betas)
    weight_decay: float = attrs.field(default=0.05, validator=non_negative)
    grad_clip: float = attrs.field(default=1.0, validator=non_negative)  # global norm; 0: off
    # Linear warmup from 0 over warmup_steps optimiser steps, or over warmup_epochs passes
    # over the token set when that is set (it replaces warmup_steps).
    warmup_steps: int = attrs.field(default=0, validator=non_negative)
    warmup_epochs: float | None = attrs.field(default=None, validator=positive)
    # After warmup: "constant"; "cosine" (half cosine to the floor at the last step);
    # "constant-cosine" (hold lr until cosine_start_epoch / cosine_start_step, then cosine
    # to the floor at the last step, as xAR).
    lr_schedule: Literal["constant", "cosine", "constant-cosine"] = "constant"
    cosine_start_steps: int = attrs.field(default=0, validator=non_negative)
    cosine_start_epoch: float | None = attrs.field(default=None, validator=positive)
    # The cosine floor: min_lr when set, else lr * min_lr_ratio.
    min_lr_ratio: float = attrs.field(default=0.0, validator=non_negative)
    min_lr: float | None = attrs.field(default=None, validator=non_negative)
    ema: bool = False
    ema_decay: float = attrs.field(default=0.9999, validator=_unit_interval)
    # min(decay, (1 + t) / (10 + t)) early on; xAR's EMA uses the plain decay from step 1.
    ema_warmup: bool = True
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = "auto"
    checkpoint_every: int = attrs.field(default=1_000, validator=positive)
    keep_checkpoints: int = attrs.field(default=2, validator=positive)
    # Per-step scalars stay on the device and are written every flush_every steps.
    flush_every: int = attrs.field(default=50, validator=positive)
    # Class count; None: from the token manifest, else the largest label + 1.
    num_classes: int | None = attrs.field(default=None, validator=positive)


@attrs.frozen(kw_only=True)
class GeneratorRunConfig:
    """A generator component (registered name + its Config) and how to train it."""

    generator: ComponentChoice = component_field("generator", "far-b")
    train: GeneratorTrainConfig = attrs.field(factory=GeneratorTrainConfig)
