"""The training skeleton the tokenizer and generator trainers share.

A :class:`TrainingLoop` subclass supplies what is particular to its model (batches, one
optimisation step, what its checkpoint holds); this module owns everything around it,
written once: the run folder, resume, checkpoint writing and rotation, per-rank RNG
state, the metrics log, the non-finite guard, progress and the typed summary.

Run folder::

    metrics.jsonl                one JSON line per step (rank 0 writes it; values averaged
                                 over ranks)
    checkpoints/ckpt-<step>.pt   the newest ``keep_checkpoints``, written by rank 0

Resume: the newest readable checkpoint is continued and the log is cut back to its step,
so a run killed at any point ends with the files of an uninterrupted run (bit-identical
on CPU). An unreadable (torn, corrupt) checkpoint is skipped for an older one, with a
warning. When checkpoints exist but none is readable, both trainers stop with a
:class:`CheckpointError` and touch nothing: starting over would overwrite the folder
of a run that may only need its files moved back.

Data parallel (torchrun): every rank runs the loop; metrics are averaged over ranks at
each flush; each rank's RNG state is gathered into the one checkpoint rank 0 writes; all
ranks wait for that write and return its path.
"""

from __future__ import annotations

import abc
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import torch

from glotok_bench.device import barrier, peak_memory_bytes
from glotok_bench.errors import CheckpointError, ConfigError, GlotokError
from glotok_bench.train.metrics_log import METRICS_FILE, MetricsLog, truncate_log
from glotok_bench.train.rng import gather_rng_states, restore_rank_rng

CHECKPOINT_DIR = "checkpoints"


class NonFiniteLossError(GlotokError):
    """A training step produced a NaN or infinite loss; nothing of it was saved."""


@attrs.frozen(kw_only=True)
class LoopSettings:
    """How long to run and how often to flush the log and checkpoint."""

    total_steps: int
    batch_size: int  # global, over all ranks
    checkpoint_every: int
    keep_checkpoints: int
    flush_every: int
    progress: bool = False
    label: str = "train"  # progress-bar label
    progress_keys: tuple[str, ...] = ()  # logged values shown beside the bar


@attrs.frozen(kw_only=True)
class TrainingSummary:
    """What one ``fit`` call did. Subclasses add what their model reports.

    ``losses``: the last logged step's scalars (loss terms, grad norm, usage stats).
    ``images_per_s`` is global (all ranks); ``peak_memory_bytes`` is this process's.
    """

    final_step: int
    steps_run: int
    resumed_from: int | None
    losses: dict[str, Any]
    wall_time_s: float
    images_per_s: float
    peak_memory_bytes: int
    peak_memory_kind: str
    device: str
    precision: str
    world_size: int
    parameters: int
    checkpoint: str | None
    metrics_log: str

    def as_record(self) -> dict[str, Any]:
        """Plain data for ``record.json``."""
        return attrs.asdict(self, recurse=True)


@attrs.frozen
class StepOutput:
    """One optimisation step: device scalars to log (checked for NaN/inf) and host extras."""

    scalars: dict[str, torch.Tensor]
    extra: dict[str, Any] = attrs.field(factory=dict)


class TrainingLoop(abc.ABC):
    """Base of a trainer: subclasses set the attributes below in ``__init__`` and
    implement the abstract methods; :meth:`run_loop` does the rest."""

    rank: int
    world_size: int
    device: torch.device
    precision: str
    seed: int
    step: int
    settings: LoopSettings

    # -- what a trainer supplies ------------------------------------------------------------

    @abc.abstractmethod
    def batches(self, start_step: int) -> Iterator[Any]:
        """This rank's batches from ``start_step`` on (a function of seed and step only)."""

    @abc.abstractmethod
    def optimisation_step(self, batch: Any) -> StepOutput:
        """One optimisation step; must advance ``self.step`` by one."""

    @abc.abstractmethod
    def read_checkpoint(self, path: Path) -> dict[str, Any]:
        """Read a checkpoint; raise CheckpointError only when the file is unreadable."""

    @abc.abstractmethod
    def load_training_state(self, path: Path, payload: dict[str, Any]) -> None:
        """Load weights and optimiser state from ``payload`` (RNG is restored by the loop).
        Raise CheckpointError when it does not belong to this run."""

    @abc.abstractmethod
    def write_checkpoint(self, path: Path, rng_states: list[dict[str, Any]]) -> Path:
        """Write the checkpoint (rank 0 only), with ``rng_states`` stored as training["rng"]."""

    def before_checkpoint(self) -> None:
        """Collective work every rank does before a checkpoint is written."""
        return None

    def after_restore(self) -> None:
        """Work after a resume (every rank)."""
        return None

    def on_start(self, run_dir: Path) -> None:
        """Called once the run folder is settled (resumed or new), before the first step."""
        return None

    # -- the loop --------------------------------------------------------------------------

    def run_loop(
        self,
        run_dir: str | Path,
        *,
        resume: bool = True,
        on_step_end: Callable[[int, Any], None] | None = None,
    ) -> dict[str, Any]:
        """Train to ``settings.total_steps``. Returns the fields of :class:`TrainingSummary`
        that the loop knows (the trainer adds device, parameters and its own)."""
        settings = self.settings
        run_dir = Path(run_dir)
        ckpt_dir = run_dir / CHECKPOINT_DIR
        metrics_path = run_dir / METRICS_FILE
        resumed_from = None
        self._last_checkpoint: Path | None = None
        if resume:
            restored = self._resume_from_latest_checkpoint(ckpt_dir, metrics_path)
            if restored is not None:
                resumed_from, self._last_checkpoint = self.step, restored
        elif metrics_path.exists() or any(ckpt_dir.glob("ckpt-*.pt")):
            raise ConfigError(f"{run_dir} already holds a run; resume it or pick another directory")
        self.on_start(run_dir)
        log = MetricsLog(metrics_path if self.rank == 0 else None, reduce=self._mean_over_ranks)
        batches = self.batches(self.step)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        progress = _progress(settings, self.step, enabled=settings.progress and self.rank == 0)
        start_step = self.step
        self.first_logged: dict[str, Any] = {}  # the first step of this call, as logged
        host_extras: set[str] = set()
        start = time.perf_counter()
        try:
            while self.step < settings.total_steps:
                output = self.optimisation_step(next(batches))
                host_extras.update(output.extra)
                log.append(
                    self.step,
                    output.scalars,
                    **output.extra,
                    wall_s=round(time.perf_counter() - start, 3),
                )
                progress.update(1)
                at_end = self.step >= settings.total_steps
                checkpoint_due = self.step % settings.checkpoint_every == 0 or at_end
                if (
                    checkpoint_due
                    or self.step % settings.flush_every == 0
                    or self.step == start_step + 1  # an early sign of life (and a NaN check)
                ):
                    last = log.flush()
                    self.first_logged = self.first_logged or dict(last)
                    self._stop_if_not_finite(log)
                    progress.set_postfix(
                        {k: f"{last[k]:.4g}" for k in settings.progress_keys if k in last}
                    )
                if checkpoint_due:
                    self._last_checkpoint = self._checkpoint(ckpt_dir)
                if on_step_end is not None:
                    on_step_end(self.step, self)
        finally:
            log.flush()
            log.close()
            progress.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        steps_run = self.step - start_step
        return {
            "final_step": self.step,
            "steps_run": steps_run,
            "resumed_from": resumed_from,
            "losses": {
                k: v for k, v in log.last.items() if k not in {"step", "wall_s", *host_extras}
            },
            "wall_time_s": elapsed,
            "images_per_s": steps_run * settings.batch_size / elapsed
            if elapsed > 0 and steps_run
            else float("nan"),
            "peak_memory_bytes": int(peak_memory_bytes(self.device)),
            "peak_memory_kind": "cuda_max_allocated"
            if self.device.type == "cuda"
            else "process_max_rss",
            "world_size": self.world_size,
            "precision": self.precision,
            "checkpoint": None if self._last_checkpoint is None else str(self._last_checkpoint),
            "metrics_log": str(metrics_path),
        }

    def _stop_if_not_finite(self, log: MetricsLog) -> None:
        if not log.non_finite:
            return
        step, bad = log.non_finite[0]
        values = ", ".join(f"{name}={value}" for name, value in bad.items())
        last = (
            f"the last good checkpoint is {self._last_checkpoint}"
            if self._last_checkpoint is not None
            else "no checkpoint had been written yet"
        )
        raise NonFiniteLossError(
            f"training stopped at step {step}: non-finite {values}; nothing from step {step} on "
            f"was saved and {last}. Lower the learning rate or check the loss weights"
        )

    def _mean_over_ranks(self, values: torch.Tensor) -> torch.Tensor:
        """Logged values averaged over data-parallel ranks (identity on one process)."""
        if self.world_size == 1:
            return values
        import torch.distributed as dist

        values = values.clone()
        dist.all_reduce(values)  # SUM: gloo has no AVG
        return values / self.world_size

    def _checkpoint(self, ckpt_dir: Path) -> Path:
        """Rank 0 writes, every rank waits for it: all return a path that exists."""
        self.before_checkpoint()
        rng_states = gather_rng_states(self.device)
        path = ckpt_dir / f"ckpt-{self.step:08d}.pt"
        if self.rank == 0:
            self.write_checkpoint(path, rng_states)
            for old in sorted(ckpt_dir.glob("ckpt-*.pt"))[: -self.settings.keep_checkpoints]:
                old.unlink(missing_ok=True)
        barrier()
        return path

    def _resume_from_latest_checkpoint(self, ckpt_dir: Path, metrics_path: Path) -> Path | None:
        """Restore the newest readable checkpoint and cut the log back to it; return its
        path, or None when the run has none yet.

        Only an unreadable file is skipped for an older one. A readable checkpoint that
        does not fit this run is an error, as is a folder where no checkpoint is readable:
        silently starting over would overwrite the run's files.
        """
        candidates = sorted(ckpt_dir.glob("ckpt-*.pt"), reverse=True)
        for path in candidates:
            try:
                payload = self.read_checkpoint(path)
            except CheckpointError as exc:
                warnings.warn(f"skipping unreadable checkpoint: {exc}", stacklevel=4)
                continue
            self.load_training_state(path, payload)
            restore_rank_rng(
                payload["training"]["rng"],
                rank=self.rank,
                world_size=self.world_size,
                device=self.device,
                reseed=self.seed + 7919 * int(payload["step"]),
                source=str(path),
            )
            self.step = int(payload["step"])
            self.after_restore()
            if self.rank == 0:
                truncate_log(metrics_path, self.step)
            barrier()  # no rank starts logging before the log is cut back
            return path
        if candidates:
            raise CheckpointError(
                f"{ckpt_dir} holds checkpoints but none is readable; nothing was overwritten "
                "(move them away to start the run over)"
            )
        return None


def _progress(settings: LoopSettings, initial: int, *, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=settings.total_steps,
        initial=initial,
        disable=not enabled,
        desc=settings.label,
        unit="step",
        dynamic_ncols=True,
        mininterval=1.0,
        file=sys.stderr,
    )
