"""Residual heads: predict what quantization lost, Z - Z_hat (GloTok Eq. 8-12).

A head sees one branch's quantized features Z_hat [B, d, h, w] and returns the predicted
residual Z_res of the same shape, or ``None`` when it predicts nothing (``none``). The
tokenizer adds it (Eq. 11-12) and trains it with :meth:`loss` (Eq. 10).
"""

from __future__ import annotations

from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from glotok_bench.errors import ConfigError

ResidualGradient = Literal["code", "straight-through", "head"]


def residual_loss(
    continuous: torch.Tensor, quantized: torch.Tensor, residual: torch.Tensor, norm: str
) -> torch.Tensor:
    """Eq. 10 for one branch: || sg[Z] - Z_hat - Z_res ||, averaged over elements.

    The paper writes the norm without a square; ``"mse"`` (squared, the default, the same
    scale as L_Q) and ``"l1"`` are offered. Z is stopped; whatever ``quantized`` and
    ``residual`` carry gradients to is trained (see :class:`TransformerResidualHead`).
    """
    error = continuous.detach() - quantized - residual
    return error.abs().mean() if norm == "l1" else error.square().mean()


def _sincos_2d(h: int, w: int, dim: int, device: torch.device) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding [h*w, dim] (half the channels per axis)."""
    quarter = dim // 4
    freqs = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    parts = []
    for grid in (ys, xs):
        angles = grid.reshape(-1, 1) * freqs
        parts += [angles.sin(), angles.cos()]
    emb = torch.cat(parts, dim=1)
    return F.pad(emb, (0, dim - emb.shape[1]))  # widths not divisible by 4 get zero tail


class TransformerResidualHead(nn.Module):
    """The ``transformer`` head: one pre-norm transformer block over the h*w positions.

    Code vectors (d = 8) are too narrow for attention, so tokens are projected to
    ``width`` and back; the output projection starts at zero, so training starts from
    Z_hat + 0 and the head only adds what it learns. Context: ``channels`` (= d).

    ``gradient`` says what L_res (Eq. 10, sg on Z only) trains; the paper does not say
    which Z_hat it means. The decoder's path is the same in every case.

    - ``"straight-through"`` (default): Z_hat is the quantized feature the model uses,
      with its straight-through gradient, so L_res trains the head and the encoder. Its
      encoder gradient -(Z - Z_hat) opposes the commitment term's beta (Z - Z_hat): at
      head init (Z_res = 0) their cosine is -1 and, at lambda_res 0.5 and beta 0.25,
      L_res's is twice as large, so on balance Z is pushed away from its code.
    - ``"code"``: Z_hat is the code itself, as in L_Q's codebook term ||sg[Z] - Z_hat||^2
      (Eq. 1): L_res trains the head and the codebook (the head sees the code); at head
      init it is L_Q's codebook term again.
    - ``"head"``: Z_hat is stopped too; L_res trains the head only.

    Why the default: on the CPU preset (100 steps, 5 seeds each,
    grids/cpu/studies/residual-gradient.toml) ``"code"`` collapsed the codebooks (validation
    usage 4% semantic / 8% visual vs 71% / 60%, 95% intervals of the difference
    [-80, -54] and [-64, -41] points) while PSNR, SSIM and stand-in rFID could not be
    told apart; it did cut the quantization error 4x and L_hist by 0.10. ``"head"``
    collapsed them as ``"code"`` did. Pushing Z off its code keeps codes in use at this
    scale; whether that holds at paper scale is open.
    """

    @attrs.frozen(kw_only=True)
    class Config:
        width: int = 256
        heads: int = 4
        mlp_ratio: float = 4.0
        positional: bool = True
        loss: Literal["mse", "l1"] = "mse"
        gradient: ResidualGradient = "straight-through"

    def __init__(self, config: Config, *, channels: int):
        super().__init__()
        if config.width <= 0 or config.heads <= 0 or config.width % config.heads:
            raise ConfigError(
                f"transformer residual head: width {config.width} must be a positive multiple "
                f"of heads {config.heads}"
            )
        self.config = config
        self.heads = config.heads
        self.loss_norm = config.loss
        width, hidden = config.width, int(config.width * config.mlp_ratio)
        self.proj_in = nn.Linear(channels, width)
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.attn_out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.norm_out = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        self._positions: dict[tuple[int, int, str], torch.Tensor] = {}

    def _position(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        key = (h, w, str(device))
        if key not in self._positions:  # computed once per grid size, not per step
            self._positions[key] = _sincos_2d(h, w, self.config.width, device)
        return self._positions[key]

    def forward(self, quantized: torch.Tensor) -> torch.Tensor:
        """Z_hat [B, d, h, w] -> Z_res [B, d, h, w]."""
        b, d, h, w = quantized.shape
        x = self.proj_in(quantized.permute(0, 2, 3, 1).reshape(b, h * w, d))
        if self.config.positional:
            x = x + self._position(h, w, x.device).to(x.dtype)
        qkv = self.qkv(self.norm1(x)).reshape(b, h * w, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.attn_out(attended.transpose(1, 2).reshape(b, h * w, -1))
        x = x + self.mlp(self.norm2(x))
        out = self.proj_out(self.norm_out(x))
        return out.reshape(b, h, w, d).permute(0, 3, 1, 2)

    def loss(
        self,
        continuous: torch.Tensor,
        quantized: torch.Tensor,
        residual: torch.Tensor,
        code: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """L_res of one branch. ``quantized`` is the straight-through Z_hat and
        ``residual`` the head's output on it; ``code`` is Z_hat with its gradient to the
        codebook (needed by ``gradient = "code"``). The code and head readings run the head
        again on an input that carries the gradient they allow; the values are the same."""
        mode = self.config.gradient
        if not torch.is_grad_enabled():  # the value is the same in every reading
            mode = "straight-through"
        if mode == "code":
            if code is None:
                raise ValueError(
                    "residual head gradient = 'code' needs the quantizer's raw codes "
                    "(QuantizedBranch.code); this quantizer does not provide them"
                )
            quantized, residual = code, self(code)
        elif mode == "head":
            quantized = quantized.detach()
            residual = self(quantized)
        return residual_loss(continuous, quantized, residual, self.loss_norm)


class NoResidualHead(nn.Module):
    """The ``none`` head: no residual; the decoder sees Z_hat. Context: ``channels``."""

    @attrs.frozen(kw_only=True)
    class Config:
        pass

    def __init__(self, config: Config, *, channels: int):
        super().__init__()
        self.config = config

    def forward(self, quantized: torch.Tensor) -> None:
        return None

    def loss(
        self,
        continuous: torch.Tensor,
        quantized: torch.Tensor,
        residual: None,
        code: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return quantized.new_zeros(())
