"""Running one cell: its steps in order, each finished step remembered on disk.

A step is a function ``step(context) -> {"metrics": {...}, "results": {...}, "labels": {...}}``.
When a step returns, its output is written to ``<cell>/steps/<step>.json``; a re-run
reads it back instead of recomputing. A step that was interrupted simply runs again, and
it is the step's own job to resume (the trainers continue from their last checkpoint).
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from glotok_bench.atomic import atomic_write_json, atomic_write_text
from glotok_bench.config import structure
from glotok_bench.errors import ConfigError
from glotok_bench.grid.spec import Cell
from glotok_bench.records import (
    RECORD_NAME,
    RecordError,
    mark_failed,
    new_record,
    read_record,
    write_record,
)

# step name -> "module:function"; imported only when a cell runs that step
STEP_TARGETS = {
    "train": "glotok_bench.pipeline:train_step",
    "eval": "glotok_bench.pipeline:eval_step",
    "tokenize": "glotok_bench.pipeline:tokenize_step",
    "gen-train": "glotok_bench.pipeline:generator_train_step",
    "gen-eval": "glotok_bench.pipeline:generator_eval_step",
}


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


def cell_status(cell: Cell) -> str:
    """'done', 'failed', 'partial' (some steps done) or 'new'."""
    try:
        record = read_record(cell.run_dir / RECORD_NAME)
    except RecordError:
        record = None
    if record is not None and record["status"] in ("ok", "failed"):
        return "done" if record["status"] == "ok" else "failed"
    return "partial" if (cell.run_dir / "steps").is_dir() else "new"


def run_cell(
    cell: Cell, config_class: type, steps: Mapping[str, str | StepFunction] | None = None
) -> dict[str, Any]:
    """Run (or finish) a cell and return its record. Failures are recorded, not raised."""
    record_path = cell.run_dir / RECORD_NAME
    if cell_status(cell) == "done":
        return read_record(record_path)
    started = time.perf_counter()
    record = new_record("grid-cell", run_id=cell.cell_id, config=cell.config)
    record["labels"] = dict(cell.labels)
    record["grid"] = {"name": cell.grid, "overrides": list(cell.overrides), "steps": list(cell.steps)}
    write_record(record_path, record)
    atomic_write_text(cell.run_dir / "config.toml", _toml(cell.config))
    try:
        config = structure(config_class, cell.config, source=f"cell {cell.cell_id}")
        previous: dict[str, dict[str, Any]] = {}
        for name in cell.steps:
            marker = cell.run_dir / "steps" / f"{name}.json"
            if marker.is_file():
                output = json.loads(marker.read_text())
            else:
                step = resolve_step(name, steps)
                output = step(StepContext(cell, config, cell.run_dir, dict(previous)))
                atomic_write_json(marker, output)
            previous[name] = output
            record["metrics"].update(output.get("metrics", {}))
            record["results"][name] = output.get("results", {})
            record["labels"].update(output.get("labels", {}))
        record["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - one failing cell must not sink the grid
        mark_failed(record, exc)
    record["wall_time_s"] = time.perf_counter() - started
    write_record(record_path, record)
    return record
