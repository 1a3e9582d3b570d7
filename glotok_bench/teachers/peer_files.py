"""Reading tensors from other projects' checkpoint files, safely.

Only ``safetensors`` and ``torch.load(weights_only=True)`` are used, so a file can hold
tensors and plain containers but never code: a pickle that references code, or a
TorchScript archive, is refused with a :class:`CheckpointError` saying so.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from glotok_bench.errors import CheckpointError, MissingWeightsError
from glotok_bench.safe_load import is_torchscript, torch_load_weights_only

WeightsChoice = Literal["model", "ema"]

# Where training scripts put the weights inside a checkpoint dict, most specific first.
_NESTED_STATE_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("model", "state_dict", "module"),
    "ema": ("ema", "model_ema", "state_dict_ema", "ema_model"),
}
_LISTED_KEYS = 60


def load_checkpoint(path: str | Path) -> Any:
    """The file's contents: a tensor dict for ``.safetensors``, else what torch saved.

    Raises :class:`MissingWeightsError` if the file is absent and
    :class:`CheckpointError` if it is unreadable or would need code to unpickle.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingWeightsError(
            f"checkpoint {path} does not exist: put the file there or point the config at "
            "it. glotok-bench never downloads weights."
        )
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    if is_torchscript(path):
        raise CheckpointError(
            f"{path} is a TorchScript archive (e.g. OpenAI's original CLIP .pt). Running it "
            "would execute its code, which glotok-bench refuses; use a state-dict file "
            "(.safetensors or a torch.save'd dict of tensors) of the same weights instead."
        )
    return torch_load_weights_only(path, what="checkpoint")


def select_state_dict(checkpoint: Any, weights: WeightsChoice, *, source: str) -> dict[str, Any]:
    """The plain or EMA state dict inside a loaded checkpoint.

    A dict of tensors at the top level is itself the plain state dict. Keys from
    DistributedDataParallel (``module.`` prefix) are stripped.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"{source} holds a {type(checkpoint).__name__}, not a dict of weights"
        )
    for key in _NESTED_STATE_KEYS[weights]:
        nested = checkpoint.get(key)
        if isinstance(nested, Mapping):
            return _strip_module_prefix(nested)
    if weights == "model" and any(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return _strip_module_prefix(checkpoint)
    raise CheckpointError(
        f"{source} has no {weights} weights: looked for a dict under "
        f"{', '.join(repr(k) for k in _NESTED_STATE_KEYS[weights])}. "
        f"Its top-level keys are: {describe_keys(checkpoint)}"
    )


def read_tensor(path: str | Path, key: str, *, weights: WeightsChoice = "model") -> torch.Tensor:
    """One tensor from a checkpoint file, by state-dict key.

    A file that holds a single tensor (``torch.save(tensor)``) returns that tensor.
    Raises :class:`CheckpointError` listing the keys present if ``key`` is absent.
    """
    checkpoint = load_checkpoint(path)
    if isinstance(checkpoint, torch.Tensor):
        return checkpoint
    state = select_state_dict(checkpoint, weights, source=str(path))
    value = state.get(key)
    if not isinstance(value, torch.Tensor):
        problem = (
            "has no key" if value is None else f"has a {type(value).__name__}, not a tensor, at"
        )
        raise CheckpointError(
            f"{path} ({weights} weights) {problem} {key!r}. Keys present: {describe_keys(state)}"
        )
    return value


def describe_keys(mapping: Mapping[str, Any]) -> str:
    """Keys with their shapes, codebook-like ones first, cut at a readable length."""
    keys = sorted(mapping, key=lambda k: (not _looks_like_codebook(k), k))
    shown = []
    for key in keys[:_LISTED_KEYS]:
        value = mapping[key]
        shown.append(f"{key} {list(value.shape)}" if isinstance(value, torch.Tensor) else str(key))
    more = len(keys) - len(shown)
    return ", ".join(shown) + (f", ... and {more} more" if more > 0 else "")


def _looks_like_codebook(key: str) -> bool:
    return any(word in str(key) for word in ("embedding", "codebook", "quantiz"))


def _strip_module_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    if state and all(str(k).startswith("module.") for k in state):
        return {str(k)[len("module.") :]: v for k, v in state.items()}
    return dict(state)



