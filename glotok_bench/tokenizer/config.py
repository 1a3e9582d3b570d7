"""Typed settings for the assembled tokenizer and its training losses (no torch import).

Defaults are the paper's where it gives them (Sec. 3.3 and 4.1: lambda_res 0.5,
lambda_hist 0.01, code dimension 8, 4096 + 12288 codes) and LlamaGen's VQGAN recipe
where the paper says only "consistent with VQGAN" (lambda_R 1, lambda_Q 1, beta 0.25,
lambda_P 1, lambda_G 0.5, PatchGAN with hinge loss).
"""

from __future__ import annotations

from typing import Literal

import attrs

from glotok_bench.config import ComponentChoice, component_field
from glotok_bench.validators import non_negative, positive, unit_interval


@attrs.frozen(kw_only=True)
class TokenizerConfig:
    """Which autoencoder, quantizer and residual head make up the tokenizer.

    Each component field is a :class:`~glotok_bench.config.ComponentChoice` (registered
    name + that component's own ``Config``). ``resolution`` is the square input size.
    """

    resolution: int = attrs.field(default=256, validator=positive)
    autoencoder: ComponentChoice = component_field("autoencoder", "vqgan-conv")
    quantizer: ComponentChoice = component_field("quantizer", "dual")
    residual_head: ComponentChoice = component_field("residual_head", "transformer")


@attrs.frozen(kw_only=True)
class DiscriminatorConfig:
    """PatchGAN discriminator (Isola et al. 2017), as in VQGAN/LlamaGen."""

    base_channels: int = attrs.field(default=64, validator=positive)
    num_layers: int = attrs.field(default=3, validator=positive)
    # BatchNorm is the original PatchGAN's choice; "group" avoids batch-size coupling
    # (tiny CPU batches, or per-GPU batches under data parallel without SyncBatchNorm).
    norm: Literal["batch", "group"] = "batch"


@attrs.frozen(kw_only=True)
class LossConfig:
    """Weights and switches of the combined loss, GloTok Eq. 13.

    L = rw*L_R + qw*L_Q + pw*L_P + aw*L_G + residual_weight*L_res + semantic_weight*L_sem
    """

    reconstruction_weight: float = attrs.field(default=1.0, validator=non_negative)
    # Eq. 2 writes L_R as a squared L2 distance.
    reconstruction: Literal["l2", "l1"] = "l2"
    quantizer_weight: float = attrs.field(default=1.0, validator=non_negative)
    # Perceptual loss (LPIPS, VGG16). Turning it off must be explicit: missing weight
    # files with perceptual = true stop the run instead of silently training without it.
    perceptual: bool = True
    perceptual_weight: float = attrs.field(default=1.0, validator=non_negative)
    vgg_weights: str | None = None  # torchvision vgg16 .pth; None: resolve "vgg16"
    lpips_weights: str | None = None  # lpips vgg.pth linear layers; None: resolve "lpips-vgg"
    # Dropout on LPIPS's linear-layer inputs while the tokenizer trains. LlamaGen builds
    # LPIPS with use_dropout=True (p 0.5) and its vq_train.py calls vq_loss.train(), so
    # L_P is a noisy (unbiased) estimate in training; evaluation LPIPS never drops.
    lpips_dropout: float = attrs.field(default=0.5, validator=unit_interval)
    adversarial_weight: float = attrs.field(default=0.5, validator=non_negative)
    # Taming's VQGAN rescales L_G by ||grad L_rec+P|| / ||grad L_G|| at the decoder's last
    # layer, which keeps a young discriminator from swamping reconstruction; LlamaGen
    # (whose recipe these defaults follow) leaves it off.
    adaptive_adversarial_weight: bool = False
    # Generator and discriminator GAN terms start at this optimiser step (LlamaGen: 20k).
    disc_start: int = attrs.field(default=20_000, validator=non_negative)
    discriminator: DiscriminatorConfig = attrs.field(factory=DiscriminatorConfig)
    residual_weight: float = attrs.field(default=0.5, validator=non_negative)  # lambda_res
    # Weight of the semantic-supervision term (lambda_hist = 0.01 for the histogram loss).
    semantic_weight: float = attrs.field(default=0.01, validator=non_negative)
