"""Pretrained-weight resolution: a weight *name* becomes a local file, or a clear error.

This module only knows what each named file is. Where files are looked for is the
``glotok_resolve_weights`` hook's business (the built-in policy lives in
``plugins/glotok_builtin/weights.py``), so a site can plug in its own layout. Nothing here,
or anywhere in glotok-bench, downloads a file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import attrs

from glotok_bench.errors import MissingWeightsError

WEIGHTS_DIR_ENV = "GLOTOK_WEIGHTS_DIR"


@attrs.frozen
class KnownWeights:
    filename: str
    what: str
    origin: str


KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    "inception-fid": KnownWeights(
        "weights-inception-2015-12-05-6726825d.pth",
        "Inception-v3 graph used for FID/IS (torch-fidelity, same as the ADM evaluator)",
        "torch-fidelity's GitHub release 'v0.2.0'",
    ),
    "vgg16": KnownWeights(
        "vgg16-397923af.pth",
        "torchvision VGG16 ImageNet weights, the LPIPS backbone",
        "torchvision's model zoo (models.VGG16_Weights.IMAGENET1K_V1)",
    ),
    "lpips-vgg": KnownWeights(
        "vgg.pth",
        "LPIPS v0.1 linear layers for the VGG backbone",
        "the `lpips` package, file lpips/weights/v0.1/vgg.pth",
    ),
    "dinov2-vitb14": KnownWeights(
        "dinov2_vitb14_pretrain.pth",
        "DINOv2 ViT-B/14 backbone (teacher for dinov2-kmeans)",
        "the DINOv2 release (facebookresearch/dinov2)",
    ),
    "clip-vit-l-14": KnownWeights(
        "open_clip_model.safetensors",
        "OpenAI CLIP ViT-L/14 as a state dict (teacher for clip-kmeans and local supervision); "
        "OpenAI's own ViT-L-14.pt is a TorchScript archive, which safe loading refuses",
        "the timm/vit_large_patch14_clip_224.openai release (open_clip_model.safetensors)",
    ),
}


def env_var_for(name: str) -> str:
    """``inception-fid`` -> ``GLOTOK_WEIGHTS_INCEPTION_FID``."""
    return "GLOTOK_WEIGHTS_" + "".join(c if c.isalnum() else "_" for c in name).upper()


def weights_dir() -> Path:
    return Path(os.environ.get(WEIGHTS_DIR_ENV, Path.home() / ".cache" / "glotok_bench" / "weights"))


def expected_filename(name: str) -> str:
    known = KNOWN_WEIGHTS.get(name)
    return known.filename if known else name


def resolve_weights(name: str, explicit: str | Path | None = None) -> Path:
    """Return the local file for weight ``name``; ``explicit`` (a user-given path) wins.

    Raises :class:`MissingWeightsError` naming the file and the places it may go.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"{name}: the file {path} does not exist.{_describe(name)}")
        return path
    from glotok_bench.registry import get_registry

    found = get_registry().hook().glotok_resolve_weights(name=name)
    if found is not None:
        return Path(found)
    raise MissingWeightsError(
        f"{name}: pretrained file {expected_filename(name)!r} not found. Put it in "
        f"{weights_dir()} (or set ${WEIGHTS_DIR_ENV}), set ${env_var_for(name)} to its path, "
        f"or pass its path explicitly.{_describe(name)} glotok-bench never downloads weights."
    )


def _describe(name: str) -> str:
    known = KNOWN_WEIGHTS.get(name)
    return f" ({known.what}; available from {known.origin}.)" if known else ""


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
