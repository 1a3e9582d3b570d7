"""A cell's training step on several Ray Train workers, data-parallel.

``[resources] workers = N`` (with ``cpus``/``gpus`` per worker) runs the cell's training
steps (``train``, ``gen-train``) through Ray Train's ``TorchTrainer``: N workers, placed
across nodes as the cluster allows, each with its share of the resources. Ray Train starts
the process group (NCCL with GPUs, gloo on CPU) and sets RANK / WORLD_SIZE / LOCAL_RANK,
so the trainers take the same DistributedDataParallel path they take under ``torchrun``:
each rank trains on a slice of every global batch and rank 0 alone writes the log and
checkpoints. Exact resume is the trainers' own: every rank restores the newest stored
checkpoint.

Each worker works in its own node-local folder filled from the store (every rank needs
the checkpoint to resume from); rank 0 publishes its folder to the store, as a one-process
cell does. With a local store (one machine, or a shared mount) all ranks work in the cell's
folder itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from glotok_bench.grid.spec import Cell


def run_data_parallel(
    cell: Cell, config_class: type, step: str, steps: Mapping[str, Any] | None, previous: dict[str, Any]
) -> None:
    """Run ``step`` of ``cell`` on ``cell.workers`` workers. Rank 0 publishes the step's
    output as its marker (``steps/<step>.json``) with the rest of its folder.
    ``previous``: earlier steps' outputs, with paths in the store's terms."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():  # the serial executor: a fresh local Ray, never a stale one
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
    per_worker = {"CPU": cell.cpus, **({"GPU": cell.gpus} if cell.gpus else {})}
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"cell": cell, "config_class": config_class, "step": step, "steps": steps,
                           "previous": previous},
        scaling_config=ScalingConfig(num_workers=cell.workers, use_gpu=cell.gpus > 0,
                                     resources_per_worker=per_worker),
        torch_config=TorchConfig(backend="nccl" if cell.gpus > 0 else "gloo"),
        run_config=RunConfig(
            name=f"train-{cell.cell_id}-{step}",
            storage_path=cell.location.rsplit("/", 1)[0] + "/_ray",  # beside the grid's Tune runs
            # A failed step fails the cell; the grid's own retries rerun it, resuming.
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error


def _worker_loop(params: dict[str, Any]) -> None:
    import contextlib

    import ray.train

    from glotok_bench.atomic import atomic_write_json
    from glotok_bench.config import structure
    from glotok_bench.grid.cells import StepContext, resolve_step, swap_prefix
    from glotok_bench.grid.publish import CellSync, workspace
    from glotok_bench.store import open_store

    cell: Cell = params["cell"]
    rank = ray.train.get_context().get_world_rank()
    store = open_store(cell.location)
    with workspace(store, f"{cell.grid}/{cell.cell_id}.rank-{rank}") as work, \
            (CellSync(work, store) if rank == 0 else contextlib.nullcontext()):
        config = structure(params["config_class"], cell.config, source=f"cell {cell.cell_id}")
        previous = swap_prefix(params["previous"], store.location, str(work))
        output = resolve_step(params["step"], params["steps"])(StepContext(cell, config, work, previous))
        if rank == 0:
            atomic_write_json(work / "steps" / f"{params['step']}.json", swap_prefix(output, str(work), store.location))
