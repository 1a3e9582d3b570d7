"""FQGAN's local semantic supervision, the baseline GloTok's histogram loss replaces.

As FQGAN's ``FeatPredHead`` and ``CLIPVisionTower`` (``tokenizer/vq_model_dual.py``,
``tokenizer/models/clip_encoder.py``): a transformer head reads the quantized semantic
codes [B, d, h, w] as h*w tokens (a two-layer ReLU MLP lifts d to the head's width, a
learned class token and positional embedding are added, then ``ln_pre``, ``depth``
pre-LN blocks and ``ln_post``) and its class token is trained with InfoNCE against
the class token a frozen CLIP ViT-L/14 computes for the same images: the last block's
output before ``ln_post`` (1024-d; HF CLIP's ``hidden_states[-1][:, 0]``), the input
resized to 224 px by nearest neighbour. InfoNCE is at temperature 1, i.e. over
exp(cosine), and the trainer weights it by 0.5 (``loss.semantic_weight``). The teacher
runs on every batch: the cost the GloTok paper claims to save (Appendix B.2).

Sizes are options, so CPU runs and tests use small heads and tiny random teachers.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from glotok_bench.errors import ConfigError
from glotok_bench.teachers.backbones import Backbone, load_backbone
from glotok_bench.tokenizer.adapters import TransformerBlock


class ClassTokenHead(nn.Module):
    """FQGAN's feature-prediction head: codes [B, d, g, g] -> class token [B, width]."""

    def __init__(self, in_dim: int, *, width: int, depth: int, heads: int, grid_size: int):
        super().__init__()
        self.grid_size = grid_size
        self.upscale = nn.Sequential(nn.Linear(in_dim, width), nn.ReLU(), nn.Linear(width, width))
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(1, width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid_size**2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(TransformerBlock(width, heads, 4.0) for _ in range(depth))
        self.ln_post = nn.LayerNorm(width)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        b, _, h, w = codes.shape
        if h * w + 1 != self.positional_embedding.shape[0]:
            raise ConfigError(
                f"local-infonce: the head's positional embedding is for a {self.grid_size}x"
                f"{self.grid_size} token grid, got {h}x{w}; set supervision.grid_size = {h}"
            )
        tokens = self.upscale(codes.flatten(2).transpose(1, 2))
        tokens = torch.cat([self.class_embedding.expand(b, 1, -1), tokens], dim=1)
        tokens = self.ln_pre(tokens + self.positional_embedding)
        for block in self.blocks:
            tokens = block(tokens)
        return self.ln_post(tokens)[:, 0]


def info_nce(prediction: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """Row i of ``prediction`` [B, D] should pick row i of ``target`` among the batch's
    targets, scored by cosine / temperature (FQGAN: -log(exp(cos_ii) / sum_j exp(cos_ij)))."""
    logits = F.normalize(prediction, dim=-1) @ F.normalize(target, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


class LocalInfoNCESupervision(nn.Module):
    """``local-infonce``: InfoNCE between a head on the semantic codes and a frozen teacher."""

    uses_teacher_codebook = False  # glotok_bench.interfaces.Supervision

    @attrs.frozen(kw_only=True)
    class Config:
        backbone: Literal["clip", "dinov2"] = "clip"
        model: str = "ViT-L-14"  # open_clip name (clip) or timm name (dinov2)
        weights_path: str = ""  # local weights file of the teacher encoder
        quick_gelu: bool = True  # clip: OpenAI's weights use QuickGELU
        image_size: int = 224  # dinov2 input size (clip uses the model's own)
        allow_random_init: bool = False  # no weights file: random teacher (timing only)
        resize: Literal["nearest", "bicubic"] = "nearest"  # FQGAN: F.interpolate's default
        hidden_dim: int = 1024  # the head's width (FQGAN: 1024, CLIP ViT-L's width)
        depth: int = 3
        heads: int = 8
        grid_size: int = 16  # token grid side the head's positional embedding is for
        temperature: float = 1.0

        def __attrs_post_init__(self) -> None:
            if self.hidden_dim < 1 or self.depth < 0 or self.heads < 1 or self.grid_size < 1:
                raise ValueError("hidden_dim, heads and grid_size must be >= 1, depth >= 0")
            if self.hidden_dim % self.heads:
                raise ValueError(f"hidden_dim {self.hidden_dim} is not divisible by heads {self.heads}")
            if not self.temperature > 0:
                raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def __init__(self, config: Config, *, semantic_dim: int, device: Any = "cpu"):
        super().__init__()
        self.config = config
        teacher = load_backbone(
            config.backbone,
            config.model,
            config.weights_path,
            image_size=config.image_size,
            quick_gelu=config.quick_gelu,
            allow_random_init=config.allow_random_init,
            device=device,
            resize=config.resize,
        )
        # Bypass nn.Module registration: the frozen teacher is loaded from its own file
        # every run and must not be trained or written into every checkpoint (ViT-L/14
        # alone is 1.2 GB). _apply below still moves it with .to().
        object.__setattr__(self, "teacher", teacher)
        self.head = ClassTokenHead(
            semantic_dim,
            width=config.hidden_dim,
            depth=config.depth,
            heads=config.heads,
            grid_size=config.grid_size,
        ).to(device)
        # The prediction must have the teacher's width. FQGAN's head is 1024 wide, CLIP
        # ViT-L's width, and has no projection; narrower heads (CPU runs) get one.
        self.project = (
            nn.Identity()
            if teacher.width == config.hidden_dim
            else nn.Linear(config.hidden_dim, teacher.width).to(device)
        )

    def _apply(self, fn, recurse: bool = True):
        self.teacher._apply(fn)
        return super()._apply(fn, recurse)

    def loss(
        self,
        semantic_codebook: torch.Tensor | None,
        quantized_semantic: torch.Tensor,
        images: torch.Tensor,
    ) -> torch.Tensor:
        """InfoNCE over the batch (image i's prediction should pick teacher i): a scalar."""
        teacher: Backbone = self.teacher
        with torch.no_grad(), _teacher_precision(images.device):
            target = teacher.class_token(images).float()
        prediction = self.project(self.head(quantized_semantic.float()))
        return info_nce(prediction, target, self.config.temperature)

    def describe(self) -> dict[str, Any]:
        return {
            "name": "local-infonce",
            **attrs.asdict(self.config),
            "teacher_width": self.teacher.width,
            "head_parameters": sum(p.numel() for p in self.parameters()),
        }


def _teacher_precision(device: torch.device):
    # The frozen teacher runs in bf16 on a GPU, as a training run would; float32 on CPU,
    # where bf16 matmuls are slow.
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
