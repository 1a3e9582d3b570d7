"""LPIPS perceptual distance (Zhang et al. 2018), VGG16 variant, from local files only.

Two files are needed and never downloaded: torchvision's VGG16 ImageNet weights
(``features.N.weight`` / ``.bias`` keys; the classifier is ignored) and the LPIPS v0.1
linear layers in the ``lpips`` package's layout (``lin{k}.model.1.weight``, [1, c_k, 1, 1]).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from glotok_bench.errors import CheckpointError

# torchvision's VGG16 "D" configuration; "M" is a 2x2 max-pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# LPIPS taps the ReLU outputs relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: the slices end
# after these `features` indices.
_TAP_ENDS = (4, 9, 16, 23, 30)
_TAP_CHANNELS = (64, 128, 256, 512, 512)


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = 3
    for item in _VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, item, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = item
    return nn.Sequential(*layers)


def _load_state(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets one clear message
        raise CheckpointError(f"{what} file {path} cannot be read safely: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{what} file {path} does not hold a state dict")
    return state


class LPIPS(nn.Module):
    """Frozen LPIPS-VGG: (x, y) images [B, 3, H, W] in [-1, 1] -> distance [B].

    ``training_dropout``: the lpips package's dropout before each linear layer, active only
    in train mode (as in LlamaGen's training loss); its weights never train.
    """

    def __init__(self, vgg_path: str | Path, lin_path: str | Path, *, training_dropout: float = 0.0):
        super().__init__()
        self.training_dropout = training_dropout
        features = _vgg16_features()
        state = _load_state(Path(vgg_path), "VGG16")
        feature_state = {
            k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")
        }
        try:
            features.load_state_dict(feature_state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{vgg_path} is not torchvision VGG16 weights: {exc}") from exc
        starts = (0, *_TAP_ENDS[:-1])
        self.slices = nn.ModuleList(
            nn.Sequential(*features[a:b]) for a, b in zip(starts, _TAP_ENDS, strict=True)
        )
        lin_state = _load_state(Path(lin_path), "LPIPS linear layers")
        weights = []
        for k, channels in enumerate(_TAP_CHANNELS):
            weight = lin_state.get(f"lin{k}.model.1.weight")
            if weight is None or tuple(weight.shape) != (1, channels, 1, 1):
                raise CheckpointError(
                    f"{lin_path}: expected lin{k}.model.1.weight of shape (1, {channels}, 1, 1), "
                    f"got {None if weight is None else tuple(weight.shape)}"
                )
            weights.append(weight.reshape(1, channels, 1, 1).float())
        self.lin = nn.ParameterList(nn.Parameter(w, requires_grad=False) for w in weights)
        # LPIPS's ScalingLayer: maps [-1, 1] images to the VGG input statistics.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        # The VGG taps stay in eval mode whatever the trainer's mode; only this module's own
        # flag follows it, and it switches nothing but the linear-layer dropout.
        super().train(False)
        self.training = mode
        return self

    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Channel-normalised activations at the five taps."""
        # A target image needs no graph: running it under no_grad skips its share of the
        # backward pass (about a quarter of LPIPS's cost in training).
        with torch.set_grad_enabled(torch.is_grad_enabled() and images.requires_grad):
            h = (images - self.shift) / self.scale
            features = []
            for block in self.slices:
                h = block(h)
                features.append(F.normalize(h, dim=1, eps=1e-10))
        return features

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(x.shape[0])
        for fx, fy, lin in zip(self._features(x), self._features(y), self.lin, strict=True):
            difference = (fx - fy).square()
            if self.training and self.training_dropout > 0:
                difference = F.dropout(difference, self.training_dropout, training=True)
            total = total + F.conv2d(difference, lin.to(fx.dtype)).mean(dim=(1, 2, 3))
        return total


def write_random_lpips_weights(folder: str | Path, *, seed: int = 0) -> tuple[Path, Path]:
    """Random-init LPIPS files in the real layouts: torchvision's ``vgg16-397923af.pth``
    (``features.*``) and the lpips package's ``vgg.pth`` (``lin{k}.model.1.weight``).

    For tests and timing where no real file exists; numbers from them mean nothing.
    Returns (vgg path, linear-layers path).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    features = _vgg16_features()
    state = {
        f"features.{key}": torch.randn(value.shape, generator=generator) * 0.05
        for key, value in features.state_dict().items()
    }
    vgg = folder / "vgg16-397923af.pth"
    torch.save(state, vgg)
    lin = folder / "vgg.pth"
    torch.save(
        {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=generator) for k, c in enumerate(_TAP_CHANNELS)},
        lin,
    )
    return vgg, lin
