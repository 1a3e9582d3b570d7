"""FQGAN-style local semantic supervision, the baseline GloTok's histogram loss replaces.

A small head maps the quantized semantic features ``[B, d, h, w]`` to one vector per
image, trained with InfoNCE against the embedding a frozen pretrained encoder (CLIP
ViT-L/14 or DINOv2) computes for the same images: the teacher runs on every batch,
which is the cost the GloTok paper claims to save (Appendix B.2).
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from glotok_bench.teachers.backbones import Backbone, load_backbone


class SemanticHead(nn.Module):
    """Quantized semantic features ``[B, d, h, w]`` -> one ``[B, out_dim]`` vector each."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.local = nn.Sequential(
            nn.Conv2d(in_dim, hidden_dim, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden_dim, hidden_dim, 1),
        )
        self.project = nn.Sequential(nn.LayerNorm(hidden_dim), nn.Linear(hidden_dim, out_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.project(self.local(features).mean(dim=(2, 3)))


class LocalInfoNCESupervision(nn.Module):
    """``local-infonce``: InfoNCE between a head on the semantic features and a frozen teacher."""

    uses_teacher_codebook = False  # glotok_bench.interfaces.Supervision

    @attrs.frozen(kw_only=True)
    class Config:
        backbone: Literal["clip", "dinov2"] = "clip"
        model: str = "ViT-L-14"  # open_clip name (clip) or timm name (dinov2)
        weights_path: str = ""  # local weights file of the teacher encoder
        quick_gelu: bool = True  # clip: OpenAI's weights use QuickGELU
        image_size: int = 224  # dinov2 input size (clip uses the model's own)
        allow_random_init: bool = False  # no weights file: random teacher (timing only)
        hidden_dim: int = 256
        temperature: float = 0.07

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
        )
        # Bypass nn.Module registration: the frozen teacher is loaded from its own file
        # every run and must not be trained or written into every checkpoint (ViT-L/14
        # alone is 1.2 GB). _apply below still moves it with .to().
        object.__setattr__(self, "teacher", teacher)
        self.head = SemanticHead(semantic_dim, config.hidden_dim, teacher.embed_dim).to(device)

    def _apply(self, fn, recurse: bool = True):
        self.teacher._apply(fn)
        return super()._apply(fn, recurse)

    def loss(
        self,
        semantic_codebook: torch.Tensor | None,
        quantized_semantic: torch.Tensor,
        images: torch.Tensor,
    ) -> torch.Tensor:
        """InfoNCE over the batch (image i's head output should pick teacher i): a scalar."""
        teacher: Backbone = self.teacher
        with torch.no_grad(), _teacher_precision(images.device):
            target = F.normalize(teacher.global_embedding(images).float(), dim=-1)
        prediction = F.normalize(self.head(quantized_semantic.float()), dim=-1)
        logits = prediction @ target.T / self.config.temperature
        labels = torch.arange(logits.shape[0], device=logits.device)
        return F.cross_entropy(logits, labels)

    def describe(self) -> dict[str, Any]:
        return {
            "name": "local-infonce",
            **attrs.asdict(self.config),
            "teacher_embed_dim": self.teacher.embed_dim,
            "head_parameters": sum(p.numel() for p in self.head.parameters()),
        }


def _teacher_precision(device: torch.device):
    # The frozen teacher runs in bf16 on a GPU, as a training run would; float32 on CPU,
    # where bf16 matmuls are slow.
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
