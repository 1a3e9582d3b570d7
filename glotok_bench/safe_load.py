"""Loading torch files that may come from anywhere, without ever running their code.

``torch.load(weights_only=True)`` unpickles tensors and plain containers only; these
helpers turn its failures into one :class:`CheckpointError` wording for every loader:
a file that would need code is refused, a truncated one is called truncated.

``argparse.Namespace`` is allow-listed: LlamaGen's and FQGAN's training scripts save their
command-line ``args`` in every checkpoint, and a Namespace is plain data (its attributes
still go through the same restricted unpickler, so it cannot smuggle code in).
"""

from __future__ import annotations

import argparse
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from glotok_bench.errors import CheckpointError

# Data-only classes that released checkpoints pickle beside their tensors.
SAFE_DATA_CLASSES = (argparse.Namespace,)


def torch_load_weights_only(path: str | Path, *, what: str = "checkpoint") -> Any:
    """The file's contents on the CPU; raises :class:`CheckpointError` naming ``what`` and ``path``."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(SAFE_DATA_CLASSES)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(exc)
        # The whole message: torch words a blocked GLOBAL without the "WeightsUnpickler
        # error:" prefix that _unpickler_reason looks for (e.g. "whose module posix is blocked").
        if not _needs_code(str(exc)):  # bad opcodes, short strings: damage, not code
            raise CheckpointError(f"{what} {path} is corrupt or not a torch checkpoint ({reason})") from None
        raise CheckpointError(
            f"{what} {path} holds pickled Python objects beyond tensors and plain containers, "
            f"which glotok-bench does not unpickle because that can run code ({reason}). "
            "Re-save it as a plain state dict or .safetensors."
        ) from None
    except Exception as exc:  # noqa: BLE001 - zip, EOF, struct and OS errors all mean "unreadable"
        raise CheckpointError(
            f"{what} {path} is truncated or not a torch checkpoint ({type(exc).__name__}: {first_line(exc)})"
        ) from None


def _unpickler_reason(exc: BaseException) -> str:
    """The restricted unpickler's own reason, without torch's paragraph about weights_only."""
    text = str(exc)
    _, marker, reason = text.partition("WeightsUnpickler error:")
    return first_line(ValueError(reason)) if marker and reason.strip() else first_line(exc)


def _needs_code(reason: str) -> bool:
    # Only a reference to a class or function (GLOBAL) would need code; every other
    # refusal of the restricted unpickler is a byte stream that is not a valid pickle.
    return "GLOBAL" in reason or "allowlisted" in reason or "add_safe_globals" in reason


def is_torchscript(path: str | Path) -> bool:
    """TorchScript archives (e.g. OpenAI's CLIP .pt) carry code; they are never loaded."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
