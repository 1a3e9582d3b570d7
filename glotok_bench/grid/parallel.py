"""A cell's training step on several Ray Train workers, data-parallel.

``[resources] workers = N`` (with ``cpus``/``gpus`` per worker) runs the cell's training
steps (``train``, ``gen-train``) through Ray Train's ``TorchTrainer``: N workers, placed
across nodes as the cluster allows, each with its share of the resources. Ray Train starts
the process group (NCCL with GPUs, gloo on CPU) and sets RANK / WORLD_SIZE / LOCAL_RANK,
so the trainers take the same DistributedDataParallel path they take under ``torchrun``:
each rank trains on a slice of every global batch and rank 0 alone writes the log and
checkpoints. Exact resume is the trainers' own: every rank restores the newest stored
checkpoint.

The workers on a node share one node-local folder, filled from the store by the first of
them while the others wait (every rank needs the checkpoint to resume from, and the token
set to train on). Rank 0 alone writes in it, as the trainers do anywhere; the checkpoints
it writes and rotates out cannot disturb another rank's restore, which is over before the
first step, a collective of all ranks. Rank 0 publishes its folder to the store, as a
one-process cell does, also when the step fails: Ray Train ends every worker as soon as
one fails, so the other ranks of a failed step wait for rank 0 to have published before
they fail too, and the retry resumes from the last checkpoint written. With a local store
(one machine, or a shared mount) all ranks work in the cell's folder itself.

Metrics reach the cell's Tune trial as a one-process cell's do, one report per logged
step: with a local store the trial follows rank 0's log in the shared folder; otherwise
rank 0 follows its own log and its reports travel to the trial through a Ray queue (only
the trial's process can report to its trial, and rank 0's log is on rank 0's node).
``ray.train.report`` cannot carry them: it is a barrier that every rank must reach equally
often, and only rank 0 has a log.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from glotok_bench.grid.publish import Report
from glotok_bench.grid.spec import Cell
from glotok_bench.store import Store

# How long the other ranks of a failed step wait for rank 0 to publish. Rank 0 may instead
# be stuck in a collective with a rank that failed alone: then this delays the failure.
PUBLISH_WAIT_S = 120.0


def run_data_parallel(
    cell: Cell, config_class: type, step: str, steps: Mapping[str, Any] | None, previous: dict[str, Any],
    report: Report | None = None,
) -> None:
    """Run ``step`` of ``cell`` on ``cell.workers`` workers. Rank 0 publishes the step's
    output as its marker (``steps/<step>.json``) with the rest of its folder.
    ``previous``: earlier steps' outputs, with paths in the store's terms. ``report``: the
    trial's Tune report, given rank 0's metrics unless the caller follows them itself
    (a local store)."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from glotok_bench.store import open_store

    if not ray.is_initialized():  # the serial executor: a fresh local Ray, never a stale one
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
    remote = not open_store(cell.location).is_local
    per_worker = {"CPU": cell.cpus, **({"GPU": cell.gpus} if cell.gpus else {})}
    with contextlib.ExitStack() as running:
        published = running.enter_context(_queue()) if remote else None
        reports = running.enter_context(_relayed_to(report)) if remote and report is not None else None
        TorchTrainer(
            _worker_loop,
            train_loop_config={"cell": cell, "config_class": config_class, "step": step, "steps": steps,
                               "previous": previous, "reports": reports, "published": published},
            scaling_config=ScalingConfig(num_workers=cell.workers, use_gpu=cell.gpus > 0,
                                         resources_per_worker=per_worker),
            torch_config=TorchConfig(backend="nccl" if cell.gpus > 0 else "gloo"),
            run_config=RunConfig(
                name=f"train-{cell.cell_id}-{step}",
                storage_path=cell.location.rsplit("/", 1)[0] + "/_ray",  # beside the grid's Tune runs
                # A failed step fails the cell; the grid's own retries rerun it, resuming.
                failure_config=FailureConfig(max_failures=0),
            ),
        ).fit()  # raises what failed a worker


@contextlib.contextmanager
def _queue() -> Iterator[Any]:
    """A Ray queue between this (the trial's) process and the workers. It needs no CPU, as
    the cell's trial and workers hold all the cell asked for, and lives on this node, so
    only the loss of this node, which ends the trial anyway, can take it away."""
    import ray
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})  # unbounded: puts never wait
    try:
        yield queue
    finally:
        queue.shutdown()


@contextlib.contextmanager
def _relayed_to(report: Report) -> Iterator[Any]:
    """A queue whose items are passed on to ``report`` in this process until training is
    over (the block ends)."""
    from ray.util.queue import Empty

    training_done = threading.Event()
    with _queue() as queue:

        def pass_on() -> None:
            while True:
                # Read before waiting: once training is done every put has returned, so an
                # empty queue after that means all items were passed on.
                done = training_done.is_set()
                try:
                    item = queue.get(timeout=0.5)
                except Empty:
                    if done:
                        return
                    continue
                report(item)

        relay = threading.Thread(target=pass_on, name="glotok-metrics-relay", daemon=True)
        relay.start()
        try:
            yield queue
        finally:
            training_done.set()
            relay.join()


@contextlib.contextmanager
def _node_workspace(store: Store, cell: Cell, context: Any) -> Iterator[Path]:
    """This worker's working folder: with a local store the cell's folder itself, else one
    folder a node, which the node's first worker fills from the store and removes once
    every worker is done, so a node keeps one copy of the cell (checkpoints, token sets),
    not one a worker. Every worker waits at the same two barriers; one that fails (its
    download included) leaves the others waiting until Ray Train ends them, as a failed
    step does."""
    from glotok_bench.device import barrier
    from glotok_bench.grid.publish import scratch_root, workspace

    name = f"{cell.grid}/{cell.cell_id}.node-{context.get_node_rank()}"
    if store.is_local or context.get_local_rank() == 0:
        folder = workspace(store, name)
    else:
        folder = contextlib.nullcontext(scratch_root() / name)
    with folder as work:
        barrier()  # filled before any worker reads it
        yield work
        barrier()  # read by all before it is removed


def _worker_loop(params: dict[str, Any]) -> None:
    import ray.train
    from ray.util.queue import Empty

    from glotok_bench.atomic import atomic_write_json
    from glotok_bench.config import structure
    from glotok_bench.grid.cells import StepContext, resolve_step, swap_prefix
    from glotok_bench.grid.publish import CellSync
    from glotok_bench.store import open_store

    cell: Cell = params["cell"]
    context = ray.train.get_context()
    rank = context.get_world_rank()
    store = open_store(cell.location)
    reports, published = params["reports"], params["published"]
    try:
        with contextlib.ExitStack() as stack:
            work = stack.enter_context(_node_workspace(store, cell, context))
            if rank == 0:
                if published is not None:  # runs once the sync below has published all
                    stack.callback(_announce_published, published, context.get_world_size() - 1)
                stack.enter_context(CellSync(work, store, report=None if reports is None else reports.put))
            config = structure(params["config_class"], cell.config, source=f"cell {cell.cell_id}")
            previous = swap_prefix(params["previous"], store.location, str(work))
            output = resolve_step(params["step"], params["steps"])(StepContext(cell, config, work, previous))
            if rank == 0:
                atomic_write_json(work / "steps" / f"{params['step']}.json",
                                  swap_prefix(output, str(work), store.location))
    except Exception:
        if rank != 0 and published is not None:
            with contextlib.suppress(Empty):
                published.get(timeout=PUBLISH_WAIT_S)
        raise


def _announce_published(published: Any, waiting: int) -> None:
    # Before rank 0 waits at the node folder's last barrier: a rank that failed waits for
    # this, not for that barrier, before it fails.
    for _ in range(waiting):
        published.put(None)
