"""The tokenizer's training objective, GloTok Eq. 13, and the GAN hinge losses.

L = w_R L_R + w_Q L_Q + w_P L_P + w_G L_G + lambda_res L_res + lambda_sem L_sem, where
L_sem is whatever the semantic-supervision plugin returns (the histogram relation loss
L_hist for GloTok). Terms are returned unweighted for logging, next to the weighted total,
except the quantizer's optional regularizers (entropy, disentanglement), which carry
their weights from the quantizer's config (as beta sits inside L_Q) and are logged so.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from glotok_bench.tokenizer.config import LossConfig
from glotok_bench.tokenizer.model import TokenizerOutput
from glotok_bench.tokenizer.perceptual import LPIPS


def build_perceptual(config: LossConfig) -> LPIPS | None:
    """The LPIPS module, or None when the config turns the perceptual loss off.

    Missing weight files raise :class:`~glotok_bench.errors.MissingWeightsError`: a run
    never falls back to training without L_P unless told to.
    """
    if not config.perceptual or config.perceptual_weight == 0:
        return None
    from glotok_bench.weights import resolve_weights

    vgg = resolve_weights("vgg16", config.vgg_weights)
    lin = resolve_weights("lpips-vgg", config.lpips_weights)
    return LPIPS(vgg, lin, training_dropout=config.lpips_dropout)


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat))), halved as in VQGAN."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def generator_loss(
    config: LossConfig,
    images: torch.Tensor,
    output: TokenizerOutput,
    *,
    perceptual: LPIPS | None,
    fake_logits: torch.Tensor | None = None,
    semantic: torch.Tensor | None = None,
    last_layer: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Combined loss (Eq. 13) -> (weighted total, unweighted terms for logging).

    ``fake_logits``: discriminator logits on the reconstruction, or None before
    ``disc_start``; ``semantic``: the supervision plugin's unweighted loss, or None;
    ``last_layer``: the decoder's output weight, needed for ``adaptive_adversarial_weight``.
    """
    rec = output.reconstruction.float()
    target = images.float()
    terms: dict[str, torch.Tensor] = {
        "rec": F.mse_loss(rec, target) if config.reconstruction == "l2" else F.l1_loss(rec, target),
        "quant": output.quantizer_loss,
        "res": output.residual_loss,
    }
    nll = config.reconstruction_weight * terms["rec"]
    if perceptual is not None:
        terms["perceptual"] = perceptual(rec, target).mean()
        nll = nll + config.perceptual_weight * terms["perceptual"]
    total = nll + config.quantizer_weight * terms["quant"] + config.residual_weight * terms["res"]
    for name, weighted in output.regularizers.items():  # e.g. FQGAN's entropy, disentangle
        terms[name] = weighted
        total = total + weighted
    if fake_logits is not None:
        terms["gen"] = hinge_generator_loss(fake_logits.float())
        weight: float | torch.Tensor = config.adversarial_weight
        if config.adaptive_adversarial_weight:
            if last_layer is None:
                raise ValueError("adaptive_adversarial_weight needs the decoder's last layer")
            weight = terms["gen_weight"] = config.adversarial_weight * adaptive_weight(
                nll, terms["gen"], last_layer
            )
        total = total + weight * terms["gen"]
    if semantic is not None:
        terms["semantic"] = semantic
        total = total + config.semantic_weight * semantic
    terms["total"] = total
    return total, terms


def adaptive_weight(nll: torch.Tensor, gan: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """VQGAN's ||d nll/dW|| / (||d gan/dW|| + 1e-4) at the decoder's last layer W,
    clamped to [0, 1e4] and detached."""
    (nll_grad,) = torch.autograd.grad(nll, last_layer, retain_graph=True)
    (gan_grad,) = torch.autograd.grad(gan, last_layer, retain_graph=True)
    return (nll_grad.norm() / (gan_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()


def describe_perceptual(config: LossConfig, module: Any) -> str:
    """One line for the run record saying whether L_P was used and why not."""
    if module is not None:
        return f"on (LPIPS-VGG from local files, dropout {config.lpips_dropout:g} in training)"
    if not config.perceptual:
        return "off (config: perceptual = false)"
    return "off (config: perceptual_weight = 0)"
