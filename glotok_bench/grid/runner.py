"""``run_grid``: expand a grid, skip finished cells, run the rest on an executor."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import click

from glotok_bench.grid.cells import StepFunction, cell_status, run_cell
from glotok_bench.grid.executors import Progress, RayExecutor, SerialExecutor
from glotok_bench.grid.spec import expand, load_grid


@attrs.frozen
class GridOutcome:
    records: list[dict[str, Any]]
    skipped: list[str]  # ids of cells that were already done

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") != "ok"]


def run_grid(
    grid_path: str | Path,
    *,
    runs_root: str | Path = "runs",  # a local folder or a store URI (s3://bucket/runs, ...)
    executor: str = "ray",
    address: str | None = None,
    config_class: type | None = None,
    steps: Mapping[str, str | StepFunction] | None = None,
    echo: Callable[[str], None] = click.echo,
) -> GridOutcome:
    if config_class is None:
        from glotok_bench.runconfig import RunConfig

        config_class = RunConfig
    from glotok_bench.store import open_store

    spec = load_grid(grid_path)
    store = open_store(runs_root)
    cells = expand(spec, config_class, store.location)
    status = {c.cell_id: cell_status(c) for c in cells}
    done = [c for c in cells if status[c.cell_id] == "done"]
    pending = [c for c in cells if status[c.cell_id] != "done"]
    echo(f"grid {spec.name}: {len(cells)} cells, {len(done)} already done, {len(pending)} to run "
         f"({executor} executor)")
    progress = Progress(len(pending), echo)
    runner = partial(run_cell, config_class=config_class, steps=steps)
    if not pending:
        records = []
    elif executor == "serial":
        records = SerialExecutor(runtime_env=spec.runtime_env).run(pending, runner, progress)
    elif executor == "ray":
        ray_executor = RayExecutor(
            address=address, cpus=spec.cpus, gpus=spec.gpus, max_retries=spec.max_retries,
            storage=store.child(spec.name, "_ray").location, workers=spec.workers,
            runtime_env=spec.runtime_env, echo=echo,
        )
        records = ray_executor.run(pending, runner, progress)
    else:
        raise click.BadParameter(f"unknown executor {executor!r} (serial or ray)")
    all_records = [run_cell(c, config_class, steps) for c in done] + records
    return GridOutcome(all_records, [c.cell_id for c in done])
