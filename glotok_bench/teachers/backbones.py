"""Frozen pretrained vision encoders (DINOv2 via timm, CLIP via open_clip), local files only.

A :class:`Backbone` takes images in [-1, 1] at any size, resizes and normalises them
the way the encoder was trained, and returns either a grid of patch features from a
chosen layer (teacher k-means) or one global embedding per image (local supervision).
Models are created with random weights and the state dict is loaded from the user's
file through :mod:`glotok_bench.teachers.peer_files`, so nothing is downloaded and no
pickled code runs. ``allow_random_init`` skips the file: fine for timing, meaningless
for semantics.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from glotok_bench.errors import CheckpointError, ConfigError, MissingWeightsError
from glotok_bench.teachers.peer_files import describe_keys, load_checkpoint, select_state_dict

BackboneKind = Literal["dinov2", "clip"]


class Backbone(nn.Module):
    """A frozen encoder with its input normalisation.

    ``patch_features(images, layer)``: ``[B, D, h, w]``; ``global_embedding(images)``:
    ``[B, E]`` (DINOv2: final-norm CLS token; CLIP: the projected image embedding);
    ``class_token(images)``: ``[B, width]``, the last block's CLS token before the final
    norm (what FQGAN's local supervision predicts: HF CLIP's ``hidden_states[-1][:, 0]``).

    ``resize``: how ``prepare`` brings images to the encoder's size: ``"bicubic"``
    (antialiased, as the encoders' own preprocessing) or ``"nearest"`` (FQGAN's
    ``F.interpolate`` default).
    """

    width: int  # token width of the transformer (class_token's size)

    def __init__(
        self,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        resize: Literal["bicubic", "nearest"] = "bicubic",
    ):
        super().__init__()
        self.image_size = image_size
        self.resize = resize
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images of any size -> normalised ``[B, 3, S, S]`` for the encoder."""
        images = images.float()
        size = (self.image_size, self.image_size)
        if images.shape[-2:] != size and self.resize == "nearest":
            images = F.interpolate(images, size=size, mode="nearest")
        elif images.shape[-2:] != size:
            images = F.interpolate(
                images, size=size, mode="bicubic", align_corners=False, antialias=True
            )
        return ((images + 1.0) / 2.0 - self.mean) / self.std

    def patch_features(self, images: torch.Tensor, layer: int = -1) -> torch.Tensor:
        raise NotImplementedError

    def global_embedding(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def class_token(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def train(self, mode: bool = True) -> Backbone:
        # Frozen: dropout and similar stay off whatever the owner's mode.
        return super().train(False)


class DinoV2Backbone(Backbone):
    """A timm DINOv2 ViT (e.g. ``vit_base_patch14_dinov2``)."""

    def __init__(self, model: nn.Module, image_size: int, final_norm: bool, resize: str):
        cfg = model.pretrained_cfg
        super().__init__(image_size, tuple(cfg["mean"]), tuple(cfg["std"]), resize)
        self.model = model
        self.final_norm = final_norm
        self.embed_dim = model.num_features
        self.width = model.embed_dim

    @property
    def depth(self) -> int:
        return len(self.model.blocks)

    def patch_features(self, images: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """Patch tokens after block ``layer`` (negative counts from the end): ``[B, D, h, w]``."""
        index = _block_index(layer, self.depth)
        (features,) = self.model.forward_intermediates(
            self.prepare(images),
            indices=[index],
            norm=self.final_norm,
            output_fmt="NCHW",
            intermediates_only=True,
        )
        return features

    def global_embedding(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(self.prepare(images))
        return self.model.forward_head(tokens, pre_logits=True)

    def class_token(self, images: torch.Tensor) -> torch.Tensor:
        ((_, prefix),) = self.model.forward_intermediates(
            self.prepare(images),
            indices=[self.depth - 1],
            norm=False,
            return_prefix_tokens=True,
            output_fmt="NLC",
            intermediates_only=True,
        )
        return prefix[:, 0]


class ClipBackbone(Backbone):
    """The image tower of an open_clip model (e.g. ``ViT-L-14``)."""

    def __init__(
        self, visual: nn.Module, mean, std, final_norm: bool, project: bool, resize: str
    ):
        image_size = visual.image_size
        image_size = image_size[0] if isinstance(image_size, tuple) else int(image_size)
        super().__init__(image_size, tuple(mean), tuple(std), resize)
        self.visual = visual
        self.final_norm = final_norm
        self.project = project
        self.embed_dim = visual.output_dim
        self.width = visual.transformer.width

    @property
    def depth(self) -> int:
        return len(self.visual.transformer.resblocks)

    def patch_features(self, images: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """Patch tokens after block ``layer``, optionally through ``ln_post`` and the
        image projection (VQGAN-LC's features are the last layer's, projected)."""
        index = _block_index(layer, self.depth)
        prepared = self.prepare(images)
        out = self.visual.forward_intermediates(
            prepared,
            indices=[index],
            normalize_intermediates=self.final_norm,
            intermediates_only=True,
            output_fmt="NLC",
        )
        (tokens,) = out["image_intermediates"]
        if self.project and self.visual.proj is not None:
            tokens = tokens @ self.visual.proj
        side = prepared.shape[-1] // self.visual.patch_size[0]
        return tokens.reshape(tokens.shape[0], side, side, -1).permute(0, 3, 1, 2)

    def global_embedding(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(self.prepare(images))

    def class_token(self, images: torch.Tensor) -> torch.Tensor:
        out = self.visual.forward_intermediates(
            self.prepare(images),
            indices=[self.depth - 1],
            intermediates_only=True,
            output_fmt="NLC",
            output_extra_tokens=True,
        )
        return out["image_intermediates_prefix"][0][:, 0]


def load_backbone(
    kind: BackboneKind,
    model_name: str,
    weights_path: str,
    *,
    image_size: int = 224,
    final_norm: bool = True,
    project: bool = True,
    quick_gelu: bool = False,
    allow_random_init: bool = False,
    device: torch.device | str = "cpu",
    resize: Literal["bicubic", "nearest"] = "bicubic",
) -> Backbone:
    """Create a frozen backbone and load its weights from ``weights_path``.

    ``image_size`` applies to DINOv2 (position embeddings are resampled); a CLIP model
    keeps its native size. ``quick_gelu`` must be on for OpenAI's CLIP weights.
    ``resize``: see :class:`Backbone`.
    """
    if not weights_path and not allow_random_init:
        raise MissingWeightsError(
            f"{kind} backbone {model_name!r} needs `weights_path`, a local weights file "
            "(.safetensors or a torch state dict); set allow_random_init = true only to time "
            "the pipeline with random weights. glotok-bench never downloads weights."
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if kind == "dinov2":
        backbone: Backbone = _load_dinov2(model_name, weights_path, image_size, final_norm, resize)
    elif kind == "clip":
        backbone = _load_clip(model_name, weights_path, final_norm, project, quick_gelu, resize)
    else:
        raise ConfigError(f"unknown backbone kind {kind!r}; expected 'dinov2' or 'clip'")
    backbone.requires_grad_(False)
    return backbone.to(device).eval()


def embedding_width(kind: BackboneKind, model_name: str) -> int:
    """Width of :meth:`Backbone.global_embedding` for a model, without building its weights."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if kind == "clip":
        import open_clip

        config = open_clip.get_model_config(model_name)
        if config is None:
            raise ConfigError(f"open_clip has no model {model_name!r}")
        return int(config["embed_dim"])
    import timm

    with torch.device("meta"):  # shapes only: no memory for a ViT-L's weights
        return int(timm.create_model(model_name, pretrained=False, num_classes=0).num_features)


def _load_dinov2(
    model_name: str, weights_path: str, image_size: int, final_norm: bool, resize: str
) -> Backbone:
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    try:
        model = timm.create_model(model_name, pretrained=False, img_size=image_size, num_classes=0)
    except RuntimeError as exc:  # timm's "Unknown model"
        raise ConfigError(f"timm has no model {model_name!r}: {exc}") from exc
    if weights_path:
        state = select_state_dict(load_checkpoint(weights_path), "model", source=weights_path)
        # Converts the original DINOv2 release layout and resamples position embeddings.
        state = checkpoint_filter_fn(state, model)
        _load_strict(model, state, weights_path, ignore_prefixes=("head.",))
    return DinoV2Backbone(model, image_size, final_norm, resize)


def _load_clip(
    model_name: str,
    weights_path: str,
    final_norm: bool,
    project: bool,
    quick_gelu: bool,
    resize: str,
) -> Backbone:
    import open_clip

    try:
        model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu)
    except RuntimeError as exc:  # open_clip's "Model config for ... not found"
        raise ConfigError(f"open_clip has no model {model_name!r}: {exc}") from exc
    preprocess = open_clip.get_model_preprocess_cfg(model)
    visual = model.visual
    if weights_path:
        state = select_state_dict(load_checkpoint(weights_path), "model", source=weights_path)
        visual_state = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
        if not visual_state:
            raise CheckpointError(
                f"{weights_path} has no 'visual.*' keys, so it is not an open_clip/OpenAI CLIP "
                f"state dict. Keys present: {describe_keys(state)}"
            )
        _load_strict(visual, visual_state, weights_path)
    return ClipBackbone(
        visual, preprocess["mean"], preprocess["std"], final_norm, project, resize
    )


def _load_strict(
    module: nn.Module, state: dict, source: str, ignore_prefixes: tuple[str, ...] = ()
) -> None:
    """``load_state_dict`` that reports a mismatch as a CheckpointError with key lists."""
    expected = set(module.state_dict())
    provided = {k for k in state if not k.startswith(ignore_prefixes)}
    missing = sorted(expected - provided)
    unexpected = sorted(provided - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{Path(source).name} does not fit {type(module).__name__}: missing "
            f"{missing[:20]}{' ...' if len(missing) > 20 else ''}, unexpected "
            f"{unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}"
        )
    try:
        module.load_state_dict({k: state[k] for k in provided}, strict=True)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"{Path(source).name}: {exc}") from exc


def _block_index(layer: int, depth: int) -> int:
    index = layer + depth if layer < 0 else layer
    if not 0 <= index < depth:
        raise ConfigError(f"layer {layer} is out of range for a {depth}-block encoder")
    return index
