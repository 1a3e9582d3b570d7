"""Where cells run: in this process, one after another, or as Ray Tune trials.

Both executors take the same cells and the same ``run_cell`` and return the cells'
records, so a grid gives the same records whichever ran it. Ray adds per-cell CPU/GPU
resources, retries of failed cells and a cluster (``address``) to run on. Records are read
from the cells' store, never from a worker's disk.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

import click

from glotok_bench.errors import ConfigError
from glotok_bench.grid.spec import Cell

CellRunner = Callable[..., dict[str, Any]]  # (cell, *, report=None) -> record
# What a multi-worker cell's own trial holds while its Ray Train workers train.
COORDINATOR_CPUS = 1


class Progress:
    """Counts of cells done / running / failed, printed as they change."""

    def __init__(self, total: int, echo: Callable[[str], None] = click.echo):
        self.total, self.echo = total, echo
        self.done = self.failed = self.running = 0

    def started(self, cell: Cell) -> None:
        self.running += 1
        self._show(f"start {cell.cell_id} {_short_labels(cell)}")

    def finished(self, cell: Cell, record: dict[str, Any]) -> None:
        self.running = max(0, self.running - 1)
        if record.get("status") == "ok":
            self.done += 1
            self._show(f"done  {cell.cell_id}")
        else:
            self.failed += 1
            error = record.get("error", {})
            self._show(f"FAILED {cell.cell_id}: {error.get('type')}: {error.get('message')}")

    def _show(self, event: str) -> None:
        self.echo(
            f"[{self.done} done / {self.running} running / {self.failed} failed of {self.total}] {event}"
        )


def _short_labels(cell: Cell) -> str:
    return " ".join(f"{k}={v}" for k, v in cell.labels.items() if k not in ("grid", "cell"))


class SerialExecutor:
    name = "serial"

    def __init__(self, *, runtime_env: dict[str, Any] | None = None):
        self.runtime_env = runtime_env or {}

    def run(self, cells: Sequence[Cell], run_cell: CellRunner, progress: Progress) -> list[dict[str, Any]]:
        if any(cell.workers > 1 for cell in cells):
            # Multi-worker cells train on Ray Train even here: its workers get the grid's
            # runtime environment (plugins, variables) as Ray trials would.
            import ray

            if not ray.is_initialized():
                ray.init(address="local", **_ray_init_options(self.runtime_env))
        records = []
        for cell in cells:
            progress.started(cell)
            record = run_cell(cell)
            progress.finished(cell, record)
            records.append(record)
        return records


class RayExecutor:
    """Cells as Ray Tune trials on a local Ray or an existing cluster (``address``)."""

    name = "ray"

    def __init__(self, *, address: str | None, cpus: float, gpus: float, max_retries: int, storage: str,
                 workers: int = 1, runtime_env: dict[str, Any] | None = None,
                 echo: Callable[[str], None] = click.echo):
        self.address = address or os.environ.get("RAY_ADDRESS")
        self.cpus, self.gpus, self.max_retries, self.workers = cpus, gpus, max_retries, workers
        self.storage = storage  # Tune's storage_path: a local folder or a URI, in the grid's store
        self.runtime_env = runtime_env or {}
        self.echo = echo

    def run(self, cells: Sequence[Cell], run_cell: CellRunner, progress: Progress) -> list[dict[str, Any]]:
        import ray
        from ray import tune

        if not ray.is_initialized():
            options = _ray_init_options(self.runtime_env)
            if self.address:
                ray.init(address=self.address, **options)
            else:
                self._say_if_not_joining()
                # "local": a fresh local Ray, never the cluster named in the address file.
                ray.init(address="local", **options)
        self._check_resources(ray.cluster_resources())
        by_id = {cell.cell_id: cell for cell in cells}

        def trainable(params: dict[str, Any]) -> None:
            cell = params["cell"]
            record = run_cell(cell, report=tune.report)
            if record.get("status") != "ok":
                # Raising lets Tune retry the cell; the record keeps the traceback.
                raise RuntimeError(f"cell {cell.cell_id} failed: {record.get('error', {}).get('message')}")
            tune.report({"status": "ok"})

        class _ProgressCallback(tune.Callback):
            def on_trial_start(self, iteration, trials, trial, **info):  # noqa: ANN001
                progress.started(trial.config["cell"])

            def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
                cell = trial.config["cell"]
                progress.finished(cell, _read_cell_record(cell))

            def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
                cell = trial.config["cell"]
                progress.finished(cell, _read_cell_record(cell))

        # A multi-worker cell's training runs in Ray Train workers that reserve the cell's
        # resources themselves; the trial only coordinates (and runs evaluation) on one CPU.
        resources = {"cpu": self.cpus, "gpu": self.gpus} if self.workers == 1 else {"cpu": COORDINATOR_CPUS, "gpu": 0}
        # Trials keep the driver's working directory (Tune's default moves them into their
        # trial folder), so a relative path in a grid means on local Ray what it means to
        # the serial executor. On other nodes it still needs the same path there.
        os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            param_space={"cell": tune.grid_search(list(by_id.values()))},
            tune_config=tune.TuneConfig(
                reuse_actors=False,
                max_concurrent_trials=concurrent_cells(ray.cluster_resources(), cpus=self.cpus, gpus=self.gpus,
                                                       workers=self.workers),
            ),
            run_config=tune.RunConfig(
                name=f"grid-{cells[0].grid}" if cells else "grid",
                storage_path=self.storage,
                failure_config=tune.FailureConfig(max_failures=self.max_retries),
                callbacks=[_ProgressCallback()],
                verbose=0,
            ),
        )
        tuner.fit()
        return [_read_cell_record(cell) for cell in cells]

    def _say_if_not_joining(self) -> None:
        """Ray's own default would join the cluster named in its address file, and hang or
        fail when that head is dead. We start a fresh local Ray instead and say why."""
        from ray._private.utils import get_ray_address_file, read_ray_address

        named = read_ray_address()
        if not named:
            return
        host, _, port = named.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                state = "a Ray head answers there; pass --address to use it"
        except (OSError, ValueError):
            state = "no Ray head answers there (stale file)"
        self.echo(f"not joining {named} from {get_ray_address_file(None)}: {state}; starting a fresh local Ray")

    def _check_resources(self, available: dict[str, float]) -> None:
        """Fail now rather than let Ray wait forever for resources the cluster lacks."""
        for key, wanted in cell_demand(cpus=self.cpus, gpus=self.gpus, workers=self.workers).items():
            have = available.get(key, 0.0)
            if wanted > have:
                where = f"the Ray cluster at {self.address}" if self.address else "this machine's local Ray"
                per_worker = self.cpus if key == "CPU" else self.gpus
                trial = f" + {COORDINATOR_CPUS} for its trial" if key == "CPU" else ""
                split = "" if self.workers == 1 else f" ({self.workers} workers x {per_worker:g}{trial})"
                raise ConfigError(
                    f"each grid cell asks for {wanted:g} {key}(s){split} but {where} has {have:g}; "
                    f"lower [resources] {key.lower()}s in the grid file or use another cluster"
                )


def _ray_init_options(runtime_env: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if runtime_env:
        options["runtime_env"] = runtime_env
    return options


def concurrent_cells(available: dict[str, float], *, cpus: float, gpus: float, workers: int) -> int | None:
    """How many multi-worker cells may run at once (None: no limit; Tune packs one-process
    cells by their own resources).

    A multi-worker trial holds one CPU while its Ray Train workers ask for theirs later;
    unchecked, Tune starts more trials than their workers fit, and the extra cells fail when
    Ray Train's start times out. Counts the cluster as it is now (no autoscaling).
    """
    if workers == 1:
        return None
    demand = cell_demand(cpus=cpus, gpus=gpus, workers=workers)
    fits = [int(available.get(key, 0.0) // wanted) for key, wanted in demand.items() if wanted > 0]
    return max(1, min(fits))


def cell_demand(*, cpus: float, gpus: float, workers: int) -> dict[str, float]:
    """What one running cell holds: its own resources, or its workers' plus the trial's CPU."""
    if workers == 1:
        return {"CPU": cpus, "GPU": gpus}
    return {"CPU": cpus * workers + COORDINATOR_CPUS, "GPU": gpus * workers}


def _read_cell_record(cell: Cell) -> dict[str, Any]:
    from glotok_bench.grid.cells import read_cell_record
    from glotok_bench.records import RecordError

    try:
        record = read_cell_record(cell)
    except RecordError as exc:
        record, message = None, str(exc)
    else:
        message = f"cell {cell.cell_id} left no record in {cell.location} (its process died)"
    if record is None:
        return {"status": "failed", "run_id": cell.cell_id, "labels": cell.labels,
                "error": {"type": "RecordError", "message": message}}
    return record
