"""Running one cell: its steps in order, each finished step remembered in the store.

A step is a function ``step(context) -> {"metrics": {...}, "results": {...}, "labels": {...}}``.
When a step returns, its output is written to ``<cell>/steps/<step>.json``; a re-run
reads it back instead of recomputing. A step that was interrupted simply runs again, and
it is the step's own job to resume (the trainers continue from their last checkpoint).

The cell's folder lives in a store (a local folder or an object store, see
:mod:`glotok_bench.store`); the cell works on its node's disk and publishes there (see
:mod:`glotok_bench.grid.publish`). ``record.json`` is written last, after everything else
is published, so a record in the store means a complete cell. Paths in step outputs and
records name the store's copy; each run maps them to its own working folder.
"""

from __future__ import annotations

import importlib
import json
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from glotok_bench.atomic import atomic_write_json, atomic_write_text
from glotok_bench.config import structure
from glotok_bench.errors import ConfigError
from glotok_bench.grid.celllock import hold_cell
from glotok_bench.grid.publish import CellSync, Report, workspace
from glotok_bench.grid.spec import Cell
from glotok_bench.records import (
    RECORD_NAME,
    RecordError,
    mark_failed,
    new_record,
    read_record,
)
from glotok_bench.store import Store, open_store

# step name -> "module:function"; imported only when a cell runs that step
STEP_TARGETS = {
    "train": "glotok_bench.pipeline:train_cell_stage",
    "eval": "glotok_bench.pipeline:eval_cell_stage",
    "tokenize": "glotok_bench.pipeline:tokenize_cell_stage",
    "gen-train": "glotok_bench.pipeline:generator_train_cell_stage",
    "gen-eval": "glotok_bench.pipeline:generator_eval_cell_stage",
}
# Steps that train and so run on every worker of a multi-worker cell (the rest run once).
DATA_PARALLEL_STEPS = frozenset({"train", "gen-train"})


@attrs.frozen
class StepContext:
    cell: Cell
    config: Any  # the typed run config
    run_dir: Path
    previous: Mapping[str, dict[str, Any]]  # outputs of the steps already done


StepFunction = Callable[[StepContext], dict[str, Any]]


def resolve_step(name: str, table: Mapping[str, str | StepFunction] | None = None) -> StepFunction:
    table = STEP_TARGETS if table is None else table
    target = table.get(name)
    if target is None:
        raise ConfigError(f"unknown grid step {name!r}; steps: {', '.join(table)}")
    if callable(target):
        return target
    module_name, attribute = target.split(":")
    return getattr(importlib.import_module(module_name), attribute)


def _toml(data: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(data)


def read_cell_record(cell: Cell) -> dict[str, Any] | None:
    """The cell's record from the store; None when it has none yet.

    Raises :class:`RecordError` (naming the store location) when it cannot be read."""
    store = open_store(cell.location)
    if store.is_local:
        path = store.local_path / RECORD_NAME
        return read_record(path) if path.is_file() else None
    try:
        data = store.read_bytes(RECORD_NAME)
    except FileNotFoundError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp, RECORD_NAME)
        local.write_bytes(data)
        try:
            return read_record(local)
        except RecordError as exc:
            raise RecordError(str(exc).replace(str(local), store.uri(RECORD_NAME))) from None


def cell_status(cell: Cell) -> str:
    """'done', 'failed', 'resumable' (some of its work is stored) or 'new'."""
    try:
        record = read_cell_record(cell)
    except RecordError:
        record = None
    if record is not None and record["status"] in ("ok", "failed"):
        return "done" if record["status"] == "ok" else "failed"
    return "resumable" if open_store(cell.location).list() else "new"


def swap_prefix(value: Any, old: str, new: str) -> Any:
    """``value`` with every string that starts with ``old`` (a folder) re-rooted at ``new``."""
    if isinstance(value, str) and (value == old or value.startswith(old.rstrip("/") + "/")):
        return new + value[len(old):]
    if isinstance(value, dict):
        return {key: swap_prefix(item, old, new) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [swap_prefix(item, old, new) for item in value]
    return value


def read_step_marker(work: Path, name: str, store: Store, notes: list[str]) -> dict[str, Any] | None:
    """A finished step's stored output, or None. An unreadable marker (torn by a crash,
    edited by hand) is dropped with a warning naming it, and the step runs again: it
    resumes from its own checkpoints, so little is recomputed and nothing is lost."""
    marker = work / "steps" / f"{name}.json"
    if not marker.is_file():
        return None
    try:
        output = json.loads(marker.read_text(encoding="utf-8"))
        if not isinstance(output, dict):
            raise ValueError("expected a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        note = f"step marker {store.uri(f'steps/{name}.json')} is unreadable ({exc}); running step {name!r} again"
        warnings.warn(note, stacklevel=2)
        notes.append(note)
        marker.unlink()
        store.delete(f"steps/{name}.json")
        return None
    return output


def run_cell(
    cell: Cell, config_class: type, steps: Mapping[str, str | StepFunction] | None = None, *,
    report: Report | None = None,
) -> dict[str, Any]:
    """Run (or finish) a cell and return its record. Failures are recorded, not raised.

    ``report``: called with training metrics as they are logged (Ray Tune's ``report``)."""
    store = open_store(cell.location)
    finished = _finished_record(cell)
    if finished is not None:
        return finished
    started = time.perf_counter()
    record = new_record("grid-cell", run_id=cell.cell_id, config=cell.config)
    record["labels"] = dict(cell.labels)
    record["grid"] = {"name": cell.grid, "overrides": list(cell.overrides), "steps": list(cell.steps),
                      "workers": cell.workers}
    record["store"] = store.location
    notes: list[str] = []
    with hold_cell(store, f"grid cell {cell.cell_id}", notes):
        finished = _finished_record(cell)  # by the job we may have waited for
        if finished is not None:
            return finished
        with workspace(store, f"{cell.grid}/{cell.cell_id}") as work, CellSync(work, store, report=report) as sync:
            atomic_write_text(work / "config.toml", _toml(cell.config))
            try:
                config = structure(config_class, cell.config, source=f"cell {cell.cell_id}")
                previous: dict[str, dict[str, Any]] = {}
                for name in cell.steps:
                    stored = read_step_marker(work, name, store, notes)
                    if stored is None:
                        output = _run_step(cell, config_class, config, name, steps, work, previous, sync)
                        stored = swap_prefix(output, str(work), store.location)
                        atomic_write_json(work / "steps" / f"{name}.json", stored)
                        sync.sync()  # a finished step is published before the next starts
                    previous[name] = swap_prefix(stored, store.location, str(work))
                    record["metrics"].update(stored.get("metrics", {}))
                    record["results"][name] = stored.get("results", {})
                    record["labels"].update(stored.get("labels", {}))
                record["status"] = "ok"
            except Exception as exc:  # noqa: BLE001 - one failing cell must not sink the grid
                mark_failed(record, exc)
        if notes:
            record["notes"] = notes
        record["wall_time_s"] = time.perf_counter() - started
        # Last, after the workspace's final publish: a stored record means a complete cell.
        store.write_text(RECORD_NAME, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return record


def _finished_record(cell: Cell) -> dict[str, Any] | None:
    try:
        record = read_cell_record(cell)
    except RecordError:
        return None  # unreadable: the cell runs again and writes a good one
    return record if record is not None and record["status"] == "ok" else None


def _run_step(
    cell: Cell, config_class: type, config: Any, name: str, steps: Mapping[str, str | StepFunction] | None,
    work: Path, previous: dict[str, dict[str, Any]], sync: CellSync,
) -> dict[str, Any]:
    if cell.workers > 1 and name in DATA_PARALLEL_STEPS:
        from glotok_bench.grid.parallel import run_data_parallel

        run_data_parallel(cell, config_class, name, steps, swap_prefix(previous, str(work), cell.location),
                          report=sync.report)
        sync.refresh_from_store()  # rank 0 published its output and the checkpoints later steps read
        marker = work / "steps" / f"{name}.json"
        return swap_prefix(json.loads(marker.read_text(encoding="utf-8")), cell.location, str(work))
    return resolve_step(name, steps)(StepContext(cell, config, work, dict(previous)))
