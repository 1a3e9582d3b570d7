"""Per-step metrics as JSON lines, buffered on the device and written in batches.

Each step's scalars stay device tensors until :meth:`flush`, which moves them all to the
host in one transfer (one sync per flush, not one per scalar per step) and appends one
line per step. After a resume, :func:`truncate_log` drops lines past the checkpoint so
the log reads as if the run had never stopped. The same rows go to TensorBoard event files
in ``tensorboard/`` beside the log, so every run (CLI, grid cell, Ray trial) has curves.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from glotok_bench.atomic import atomic_write_text

TENSORBOARD_DIR = "tensorboard"


class MetricsLog:
    """``reduce``: applied to the flattened queued values before they leave the device;
    under data parallel it averages them over ranks (every rank must then flush in step).
    """

    def __init__(
        self, path: str | Path | None, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
        *, tensorboard: bool = True,
    ):
        self.path = None if path is None else Path(path)
        self.reduce = reduce
        self.tensorboard = tensorboard and self.path is not None
        self._board: Any = None
        self._steps: list[int] = []
        self._keys: list[tuple[str, ...]] = []
        self._values: list[torch.Tensor] = []
        self._extra: list[dict[str, Any]] = []
        self.last: dict[str, float] = {}
        # (step, {name: "nan" | "inf" | "-inf"}) of the latest flush's non-finite scalars
        self.non_finite: list[tuple[int, dict[str, str]]] = []

    def append(self, step: int, scalars: dict[str, torch.Tensor], **extra: Any) -> None:
        """Queue one step: 0-dim tensors (kept on device) plus plain host values."""
        keys = tuple(scalars)
        self._steps.append(step)
        self._keys.append(keys)
        self._values.append(torch.stack([scalars[k].detach().float().reshape(()) for k in keys]))
        self._extra.append(extra)

    def flush(self) -> dict[str, float]:
        """Write queued steps; returns the last step's values (also kept in ``last``; all
        steps with NaN/inf scalars are listed in ``non_finite``)."""
        self.non_finite = []
        if not self._steps:
            return self.last
        values = torch.cat(self._values)
        if self.reduce is not None:
            values = self.reduce(values)
        values = values.tolist()  # the single device->host transfer
        records, offset = [], 0
        for step, keys, extra in zip(self._steps, self._keys, self._extra, strict=True):
            record = {
                "step": step,
                **{
                    k: _finite(v)
                    for k, v in zip(keys, values[offset : offset + len(keys)], strict=True)
                },
                **extra,
            }
            offset += len(keys)
            bad = {k: record[k] for k in keys if isinstance(record[k], str)}
            if bad:
                self.non_finite.append((step, bad))
            records.append(record)
            self.last = record
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write("".join(f"{json.dumps(record, sort_keys=False)}\n" for record in records))
                handle.flush()
                os.fsync(handle.fileno())
            if self.tensorboard:
                self._write_tensorboard(self._steps[0], records)
        self._steps, self._keys, self._values, self._extra = [], [], [], []
        return self.last


    def _write_tensorboard(self, first_step: int, records: list[dict[str, Any]]) -> None:
        if self._board is None:
            from torch.utils.tensorboard import SummaryWriter  # slow to import: only when used

            # purge_step: after a resume TensorBoard drops the events at or past the first step
            # written again, as truncate_log does for the JSON lines.
            self._board = SummaryWriter(log_dir=str(self.path.parent / TENSORBOARD_DIR), purge_step=first_step)
        for row in records:
            for key, value in row.items():
                if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                    self._board.add_scalar(key, value, row["step"])
        self._board.flush()

    def close(self) -> None:
        if self._board is not None:
            self._board.close()
            self._board = None


def _finite(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)  # JSON has no NaN/inf


def truncate_log(path: str | Path, last_step: int) -> None:
    """Keep only lines with ``step <= last_step`` (atomic rewrite; no-op if absent)."""
    path = Path(path)
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line from a kill mid-write
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def read_log(path: str | Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for line in Path(path).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
