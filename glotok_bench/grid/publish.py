"""A cell's working folder, kept in step with its store while the cell runs.

A cell works in a folder on its node's disk. When the store is elsewhere (an object
store), :func:`workspace` first brings the cell's stored files there (finished step
markers, checkpoints: whatever a rerun resumes from), and :class:`CellSync` copies new
and changed files back every few seconds and once more at the end. So a node that dies
mid-cell loses at most one sync interval, and whichever node reruns the cell resumes
from the last stored checkpoint.

The same thread follows the trainers' ``metrics.jsonl`` logs (written by rank 0 at each
flush; a pass reads only what was appended since the last) and, inside a Ray Tune trial,
turns each new row into a Tune report, so Tune's results, its TensorBoard view and its
schedulers see training as it goes, step by step (``training_iteration`` counts logged
steps, so schedulers compare cells at equal progress, not at equal wall time). The
trainers write their own TensorBoard files beside the log (``<stage>/tensorboard/``);
this thread publishes them with the rest of the folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from glotok_bench.records import RECORD_NAME
from glotok_bench.runlock import LOCK_NAME
from glotok_bench.store import Store
from glotok_bench.train.metrics_log import METRICS_FILE, TENSORBOARD_DIR, LogTail

SYNC_INTERVAL_ENV = "GLOTOK_SYNC_INTERVAL_S"
SCRATCH_ENV = "GLOTOK_SCRATCH_DIR"

Report = Callable[[dict[str, Any]], None]
_NOT_DOWNLOADED = frozenset({RECORD_NAME, LOCK_NAME})  # the record, the cell's lease


def scratch_root() -> Path:
    """Node-local space for cells whose store is not a local folder."""
    return Path(os.environ.get(SCRATCH_ENV) or Path(tempfile.gettempdir()) / "glotok-scratch")


@contextlib.contextmanager
def workspace(store: Store, name: str) -> Iterator[Path]:
    """The folder a cell works in: the store's own folder when it is local, else a fresh
    scratch folder filled from the store (and removed afterwards: the store has it all)."""
    if store.is_local:
        store.local_path.mkdir(parents=True, exist_ok=True)
        yield store.local_path
        return
    work = scratch_root() / name
    shutil.rmtree(work, ignore_errors=True)  # the store, not a stale scratch copy, is the truth
    work.mkdir(parents=True)
    try:
        store.download_dir(work, skip=_NOT_DOWNLOADED)
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _published_files(work: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(work.rglob("*")):
        relative = path.relative_to(work)
        # Dot files are temp files of atomic writes and lock files; the record goes last.
        if any(part.startswith(".") for part in relative.parts) or relative.as_posix() == RECORD_NAME:
            continue
        if path.is_file():
            yield relative.as_posix(), path


class CellSync:
    """``with CellSync(work, store, report=...):`` around the steps of a cell.

    ``mirror``: copy the working folder to the store (only where the store is elsewhere,
    and only from the process that writes the files: rank 0).
    """

    def __init__(self, work: Path, store: Store, *, report: Report | None = None, mirror: bool = True,
                 interval_s: float | None = None):
        self.work, self.store, self.report = work, store, report
        self.mirror = mirror and not store.is_local
        self.interval_s = float(os.environ.get(SYNC_INTERVAL_ENV, 15)) if interval_s is None else interval_s
        self._seen: dict[str, tuple[int, int]] = {}
        self._last_step: dict[str, int] = {}
        self._tails: dict[str, LogTail] = {}
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def __enter__(self) -> CellSync:
        self.mark_current()
        self._take_logged_rows_as_reported()  # they were, by the run that logged them
        self._thread = threading.Thread(target=self._loop, name="glotok-cell-sync", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=600)
        self.sync()

    def mark_current(self) -> None:
        """Take the working folder as it is now as already stored (e.g. just downloaded)."""
        with self._lock:
            self._seen = {name: _signature(path) for name, path in _published_files(self.work)}

    def refresh_from_store(self) -> None:
        """Bring files that another process published (a data-parallel step's rank 0) here.
        That process reported its logs' rows itself."""
        if self.store.is_local:
            return
        with self._lock:  # one hold: no pass may publish or report the files half-taken
            self.store.download_dir(self.work, skip=_NOT_DOWNLOADED)
            self.mark_current()
            self._take_logged_rows_as_reported()

    def sync(self) -> None:
        with self._lock:
            try:
                self._follow_metrics()
                if self.mirror:
                    self._push()
            except Exception as exc:  # noqa: BLE001 - a failed pass is retried by the next one
                self.errors.append(f"{type(exc).__name__}: {exc}")
                if self._stop.is_set():
                    raise

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sync()

    # -- the store ------------------------------------------------------------------------

    def _push(self) -> None:
        current: dict[str, tuple[int, int]] = {}
        for name, path in _published_files(self.work):
            try:
                signature = _signature(path)
                if self._seen.get(name) != signature:
                    self.store.upload_file(path, name)
            except FileNotFoundError:
                continue  # removed while we looked (an old checkpoint being rotated out)
            current[name] = signature
        # Deletions after uploads: the store never holds fewer checkpoints than the folder.
        for name in set(self._seen) - set(current):
            self.store.delete(name)
        self._seen = current

    # -- metrics --------------------------------------------------------------------------

    def _logs(self) -> list[Path]:
        return [p for p in sorted(self.work.rglob(METRICS_FILE)) if TENSORBOARD_DIR not in p.parts]

    def _stage(self, log: Path) -> str:
        parent = log.parent.relative_to(self.work).as_posix()
        return "run" if parent == "." else parent

    def _take_logged_rows_as_reported(self) -> None:
        # Fresh tails: the files may have been replaced (downloaded) since the last read.
        self._tails = {self._stage(log): LogTail(log) for log in self._logs()}
        for stage, tail in self._tails.items():
            for row in tail.new_rows():
                self._last_step[stage] = row["step"]

    def _follow_metrics(self) -> None:
        if self.report is None:
            return
        for log in self._logs():
            stage = self._stage(log)
            for row in self._tails.setdefault(stage, LogTail(log)).new_rows():
                if row["step"] > self._last_step.get(stage, 0):
                    self.report({**{f"{stage}/{key}": value for key, value in _scalars(row).items()},
                                 f"{stage}/step": row["step"]})
                    self._last_step[stage] = row["step"]  # a failed report is retried next pass


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in row.items()
        if key != "step" and isinstance(value, int | float) and not isinstance(value, bool)
    }
