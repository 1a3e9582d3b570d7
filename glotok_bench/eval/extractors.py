"""Feature extractors for FID/IS: torch-fidelity's Inception from a local file, or the stand-in.

Every extractor maps float images [B, 3, H, W] in [-1, 1] to ``{"pool": [B, d], "logits":
[B, k]}`` and describes itself in :meth:`FeatureExtractor.protocol`: name, weights hash,
layers. Metric names are derived through :func:`metric_name`, so a number measured with
anything but the Inception graph is called e.g. ``rfid@standin-randconv-v1`` and can
never be read or tabled as an rFID.

Inception loading never touches the network: torch-fidelity's constructor downloads only
when ``feature_extractor_weights_path`` is None, and we always pass the local file's
bytes. torch-fidelity unpickles those bytes with ``weights_only=False``; we first load the
very same in-memory bytes with ``weights_only=True``, so a file holding pickled code is
refused before torch-fidelity ever sees it (and the bytes cannot change in between).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from glotok_bench.errors import CheckpointError, MissingWeightsError
from glotok_bench.eval.standin import POOL_DIM, STANDIN_NAME, RandConvStandin

INCEPTION_NAME = "inception-v3-compat"  # torch-fidelity's name for the FID Inception graph
INCEPTION_WEIGHTS = "inception-fid"  # the name glotok_bench.weights resolves to the file
INCEPTION_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
EXTRACTOR_CHOICES = ("auto", "inception", "standin")

_IMAGE_CONVERSION = "uint8 = round(127.5 * (clamp(x, -1, 1) + 1))"
# A few keys and shapes that only torch-fidelity's FID Inception layout has: enough to
# turn "wrong file" into a clear error instead of a page of missing-key messages.
_INCEPTION_SIGNATURE = {"fc.weight": (1008, 2048), "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3)}


class FeatureExtractor:
    """A frozen network plus what identifies it. Call it on images in [-1, 1]."""

    def __init__(
        self,
        network: torch.nn.Module,
        *,
        name: str,
        weights_sha256: str,
        weights_file: str | None,
        layers: dict[str, str],
        pool_dim: int,
        resize: str,
    ):
        self.network = network.eval().requires_grad_(False)
        self.name = name
        self.weights_sha256 = weights_sha256
        self.weights_file = weights_file
        self.layers = layers  # our feature name -> the network's own layer name
        self.pool_dim = pool_dim
        self.resize = resize

    @property
    def is_inception(self) -> bool:
        """True only for the FID Inception graph: the one whose numbers match the literature."""
        return self.name == INCEPTION_NAME

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: torch.device | str) -> FeatureExtractor:
        self.network.to(device)
        return self

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images [B, 3, H, W] in [-1, 1] (or already uint8) -> {"pool": [B, d], "logits": [B, k]}."""
        if images.dtype != torch.uint8:
            from glotok_bench.data.preprocess import to_uint8

            images = to_uint8(images)
        with full_fp32():
            pool, logits = self.network(images.to(self.device))
        return {"pool": pool.float(), "logits": logits.float()}

    def compute_setting(self) -> dict[str, str]:
        """Where and in what arithmetic features are computed: CPU and GPU kernels (and
        TF32, which this class switches off) move features in the last digits, so both go
        into every protocol and the reference-statistics cache key."""
        return {"extractor_device": self.device.type, "extractor_precision": FEATURE_PRECISION}

    def protocol(self) -> dict[str, Any]:
        return {
            "extractor": self.name,
            "extractor_weights_sha256": self.weights_sha256,
            "extractor_weights_file": self.weights_file,
            "feature_layers": dict(self.layers),
            "extractor_input": f"{_IMAGE_CONVERSION}; {self.resize}",
            "literature_comparable": self.is_inception,
            **self.compute_setting(),
        }


FEATURE_PRECISION = "fp32, TF32 off (cuDNN conv and CUDA matmul)"


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """Switch TF32 off for the duration. On Ampere+ GPUs PyTorch runs fp32 convolutions in
    TF32 by default (10-bit mantissa), which moves Inception features enough to shift FID;
    torch-fidelity's reference numbers are full fp32. Restored afterwards, so training
    code in the same process keeps its own setting."""
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


def metric_name(base: str, extractor: FeatureExtractor) -> str:
    """``rfid`` for the Inception graph, ``rfid@<extractor>`` for anything else."""
    return base if extractor.is_inception else f"{base}@{extractor.name}"


class _InceptionPoolAndLogits(torch.nn.Module):
    """torch-fidelity's Inception, asked for the pool (2048) and unbiased logits (1008)."""

    def __init__(self, raw: bytes):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.inception = FeatureExtractorInceptionV3(
            INCEPTION_NAME,
            ["2048", "logits_unbiased"],
            feature_extractor_weights_path=io.BytesIO(raw),
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inception(images)


def load_inception(path: str | Path, device: torch.device | str = "cpu") -> FeatureExtractor:
    """torch-fidelity's FID Inception from ``path`` (the 2015-12-05 graph converted to PyTorch)."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(
            f"Inception weights {path} do not exist. Put {INCEPTION_FILENAME} in $GLOTOK_WEIGHTS_DIR, "
            "set $GLOTOK_WEIGHTS_INCEPTION_FID, or pass its path (--inception PATH)."
        )
    raw = path.read_bytes()
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets one clear message
        raise CheckpointError(
            f"Inception weights {path} cannot be loaded safely (weights only): {exc}"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(
            f"Inception weights {path} hold a {type(state).__name__}, not a state dict"
        )
    for key, shape in _INCEPTION_SIGNATURE.items():
        found = state.get(key)
        if found is None or tuple(found.shape) != shape:
            raise CheckpointError(
                f"{path} is not torch-fidelity's FID Inception ({INCEPTION_FILENAME}): "
                f"{key} is {None if found is None else tuple(found.shape)}, expected {shape}"
            )
    del state
    network = _InceptionPoolAndLogits(raw)
    return FeatureExtractor(
        network.to(device),
        name=INCEPTION_NAME,
        weights_sha256=hashlib.sha256(raw).hexdigest(),
        weights_file=path.name,
        layers={"pool": "2048", "logits": "logits_unbiased"},
        pool_dim=2048,
        resize="torch-fidelity TF1-compatible bilinear resize to 299x299",
    )


def standin_extractor(device: torch.device | str = "cpu") -> FeatureExtractor:
    network = RandConvStandin()
    return FeatureExtractor(
        network.to(device),
        name=STANDIN_NAME,
        weights_sha256=network.weights_sha256(),
        weights_file=None,
        layers={"pool": "mean of each conv layer (480)", "logits": "fixed random projection (100)"},
        pool_dim=POOL_DIM,
        resize="bilinear (antialiased) resize to 64x64",
    )


def resolve_inception_path(explicit: str | Path | None) -> Path:
    """The local Inception file: ``explicit`` if given, else the weight-resolution hook."""
    from glotok_bench.weights import resolve_weights

    try:
        return resolve_weights(INCEPTION_WEIGHTS, explicit if explicit else None)
    except MissingWeightsError as exc:
        raise MissingWeightsError(
            f"{exc} For FID/IS pass --inception PATH (metric config inception_weights), or choose "
            f"extractor 'standin' to get clearly labelled {STANDIN_NAME} numbers instead."
        ) from None


# (choice, resolved path or None, device) -> extractor. FID and IS built separately share
# one network (Inception takes a second and 100 MB to load).
_BUILT: dict[tuple[str, str, str], FeatureExtractor] = {}


def build_extractor(
    choice: str = "auto",
    *,
    inception_weights: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> FeatureExtractor:
    """``inception``: the local Inception file or :class:`MissingWeightsError`;
    ``standin``: :data:`STANDIN_NAME`; ``auto``: Inception when its file resolves, else the
    stand-in with a warning. An explicit ``inception_weights`` path that does not exist is
    always an error, never a reason to fall back.
    """
    if choice not in EXTRACTOR_CHOICES:
        raise ValueError(
            f"unknown feature extractor {choice!r}; choose one of {', '.join(EXTRACTOR_CHOICES)}"
        )
    path: Path | None = None
    if choice == "inception" or (choice == "auto" and inception_weights):
        path = resolve_inception_path(inception_weights)
    elif choice == "auto":
        try:
            path = resolve_inception_path(None)
        except MissingWeightsError as exc:
            warnings.warn(f"{exc} Falling back to {STANDIN_NAME}.", stacklevel=2)
    device = torch.device(device)
    key = ("inception" if path else "standin", str(path.resolve()) if path else "", str(device))
    if key not in _BUILT:
        _BUILT[key] = load_inception(path, device) if path else standin_extractor(device)
    return _BUILT[key]


def clear_extractor_cache() -> None:
    _BUILT.clear()


def register_standin_with_torch_fidelity() -> str:
    """Make the stand-in usable as ``feature_extractor=`` in ``torch_fidelity.calculate_metrics``.

    Lets torch-fidelity's own code check our streaming FID/IS on the same network.
    torch-fidelity's registry is global and refuses duplicates, so this is idempotent.
    """
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if STANDIN_NAME in FEATURE_EXTRACTORS_REGISTRY:
        return STANDIN_NAME

    class TorchFidelityStandin(FeatureExtractorBase):
        def __init__(self, name: str, features_list: list[str], **_: Any):
            super().__init__(name, features_list)
            self.network = RandConvStandin()

        @staticmethod
        def get_provided_features_list() -> tuple[str, ...]:
            return ("pool", "logits")

        @staticmethod
        def get_default_feature_layer_for_metric(metric: str) -> str:
            return "logits" if metric == "isc" else "pool"

        @staticmethod
        def can_be_compiled() -> bool:
            return False

        @staticmethod
        def get_dummy_input_for_compile() -> torch.Tensor:
            return torch.zeros(1, 3, 64, 64, dtype=torch.uint8)

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
            pool, logits = self.network(images)
            named = {"pool": pool, "logits": logits}
            return tuple(named[feature] for feature in self.features_list)

    register_feature_extractor(STANDIN_NAME, TorchFidelityStandin)
    return STANDIN_NAME
