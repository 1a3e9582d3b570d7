"""Per-step metrics as JSON lines, buffered on the device and written in batches.

Each step's scalars stay device tensors until :meth:`flush`, which moves them all to the
host in one transfer (one sync per flush, not one per scalar per step) and appends one
line per step. After a resume, :func:`truncate_log` drops lines past the checkpoint so
the log reads as if the run had never stopped; :class:`LogTail` follows a log as it is
written. The same rows go to TensorBoard event files in ``tensorboard/`` beside the log,
so every run (CLI, grid cell, Ray trial) has curves.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from glotok_bench.atomic import atomic_write_text

if TYPE_CHECKING:  # torch is imported where tensors are handled: the log readers run without it
    import torch

METRICS_FILE = "metrics.jsonl"  # a training run's log, in its run folder
TENSORBOARD_DIR = "tensorboard"  # its TensorBoard events, beside the log
_Line = TypeVar("_Line", str, bytes)


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
        import torch

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
        import torch

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


def logged_rows(lines: Iterable[_Line]) -> Iterator[tuple[_Line, dict[str, Any]]]:
    """``(line, row)`` for each line that holds a whole logged step. Any other line is
    passed over: a log is read while it is written (the last line may be half there) and
    after a kill mid-write (it may stay so)."""
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:  # also a line cut inside a multi-byte character
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            yield line, row


class LogTail:
    """Follows a log that grows while it is read: each :meth:`new_rows` reads only the
    bytes appended since the last one, so following a long run costs its length once.

    Only complete lines are read; a line still being written is read whole next time. A
    log replaced or cut back (:func:`truncate_log` on resume) is read again from its start;
    its rows up to the cut come again, and the caller tells them by their steps.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.offset = 0  # bytes of the file taken so far, always at the start of a line
        self._file_id: tuple[int, int] | None = None

    def new_rows(self) -> Iterator[dict[str, Any]]:
        """Rows of the lines completed since the last call. A line counts as taken only
        once the caller asks for what follows it, so a row whose handling raised (a report
        that failed) comes again next time."""
        for _line, row in logged_rows(self._new_lines()):
            yield row

    def _new_lines(self) -> Iterator[bytes]:
        try:
            with open(self.path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                file_id = (stat.st_dev, stat.st_ino)
                if file_id != self._file_id or stat.st_size < self.offset:
                    self._file_id, self.offset = file_id, 0
                handle.seek(self.offset)
                appended = handle.read()
        except FileNotFoundError:
            return
        # Cut after the last newline, a byte UTF-8 never uses inside a character.
        for line in appended[: appended.rfind(b"\n") + 1].splitlines(keepends=True):
            yield line
            self.offset += len(line)


def truncate_log(path: str | Path, last_step: int) -> None:
    """Keep only lines with ``step <= last_step`` (atomic rewrite; no-op if absent)."""
    path = Path(path)
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line, row in logged_rows(lines) if row["step"] <= last_step]
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Every row of a finished log; unlike the readers above, a line that is not a whole
    row is an error here (nothing writes a finished log any more)."""
    return [
        json.loads(line)
        for line in Path(path).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
