"""The stand-in feature network used for FID/IS when no Inception file is on disk.

``standin-randconv-v1`` is a fixed random convolutional network: four 3x3 stride-2 conv +
ReLU layers (3 -> 32 -> 64 -> 128 -> 256 channels) on the image resized to 64x64, with
He-normal weights drawn from ``numpy.random.RandomState(20240917)``. Its "pool" feature is
the global average of every layer's activations, concatenated (480-d, so both fine
texture and coarse layout move it); its "logits" are a fixed random projection of those
to 100 pseudo-classes (scaled by 20).

Why this design: it needs no file (so it runs anywhere, including CI), it is bit-for-bit
the same network everywhere (``RandomState`` streams are frozen by numpy's compatibility
policy, unlike ``torch.manual_seed`` streams), and random conv features are known to be
sensitive to blur, noise and colour shifts. It is *not* a perceptual model: its numbers
order models roughly the way FID does but are on a different scale, which is why every
result it produces carries its name (see :mod:`glotok_bench.eval.extractors`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

STANDIN_NAME = "standin-randconv-v1"
_SEED = 20240917
_INPUT_SIZE = 64
_WIDTHS = (32, 64, 128, 256)
_NUM_LOGITS = 100
# Unscaled, every image gives near-uniform class probabilities and IS ~1.0 says nothing;
# at 20 the demo photos score ~2.8 and uniform noise ~1.1, so the ordering carries signal.
_LOGIT_SCALE = 20.0
POOL_DIM = sum(_WIDTHS)


def _he_normal(rng: np.random.RandomState, shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
    values = rng.standard_normal(size=shape) * np.sqrt(2.0 / fan_in)
    return torch.from_numpy(values.astype(np.float32))


class RandConvStandin(nn.Module):
    """uint8 images [B, 3, H, W] (any H, W) -> (pool [B, 480], logits [B, 100]), float32."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.RandomState(_SEED)
        self.convs = nn.ModuleList()
        channels = 3
        for width in _WIDTHS:
            conv = nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False)
            conv.weight.data = _he_normal(rng, (width, channels, 3, 3), channels * 9)
            self.convs.append(conv)
            channels = width
        self.register_buffer(
            "projection", _he_normal(rng, (POOL_DIM, _NUM_LOGITS), POOL_DIM) * _LOGIT_SCALE
        )
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected uint8 images [B, 3, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        x = images.float().div(127.5).sub(1.0)
        if tuple(x.shape[-2:]) != (_INPUT_SIZE, _INPUT_SIZE):
            # antialias so a 256 px input is low-passed before it is subsampled, like a photo
            # resize would be; a fixed function of the input, hence still deterministic.
            x = F.interpolate(
                x,
                size=(_INPUT_SIZE, _INPUT_SIZE),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        pooled = []
        for conv in self.convs:
            x = F.relu(conv(x))
            pooled.append(x.mean(dim=(2, 3)))
        pool = torch.cat(pooled, dim=1)
        return pool, pool @ self.projection

    def weights_sha256(self) -> str:
        """Hash of the parameters' float32 bytes: identifies the network like a file hash would."""
        import hashlib

        digest = hashlib.sha256()
        for tensor in [*(conv.weight for conv in self.convs), self.projection]:
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()
