"""Run records: one JSON file per job holding its results and everything behind them.

Every metric is stored as ``{"value": ..., "protocol": {...}}`` so a number never
travels without the data, split, count, resolution, crop and feature extractor it was
measured with. Leaderboards are regenerated from these files and nothing else.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import platform
import subprocess
import traceback
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from glotok_bench.atomic import atomic_write_json
from glotok_bench.errors import GlotokError

SCHEMA = "glotok-bench/run-record/1"
RECORD_NAME = "record.json"
_VERSIONED = ("glotok-bench", "torch", "torchvision", "timm", "open-clip-torch", "torch-fidelity", "numpy")


class RecordError(GlotokError):
    """A run record that cannot be read or does not follow the schema."""


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@functools.cache
def code_revision() -> dict[str, Any]:
    """The git commit of the glotok-bench source this process runs, and whether tracked files
    differ from it, or ``{"commit": "unknown"}`` for an install without its git checkout
    (then ``versions`` names the release)."""
    checkout = Path(__file__).resolve().parents[1]
    if not (checkout / ".git").exists():
        return {"commit": "unknown"}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, timeout=30)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=checkout,
                                capture_output=True, text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": "unknown"}
    if commit.returncode != 0 or not commit.stdout.strip():
        return {"commit": "unknown"}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def new_record(kind: str, *, run_id: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "kind": kind,
        "run_id": run_id,
        "status": "running",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": config or {},
        "metrics": {},
        "results": {},
        "environment": {
            "versions": package_versions(),
            "source": code_revision(),
            "host": platform.node(),
            "platform": platform.platform(),
        },
    }


def metric(value: float, protocol: dict[str, Any]) -> dict[str, Any]:
    return {"value": value, "protocol": protocol}


def mark_failed(record: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    record["status"] = "failed"
    record["error"] = {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }
    return record


def write_record(path: str | Path, record: dict[str, Any]) -> Path:
    return atomic_write_json(path, record)


def read_record(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"run record {path} cannot be read: {exc}") from None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise RecordError(f"run record {path} is not a {SCHEMA} record")
    for key in ("kind", "run_id", "status", "metrics"):
        if key not in record:
            raise RecordError(f"run record {path} lacks the {key!r} field")
    return record


def iter_records(root: str | Path) -> Iterator[tuple[Path, dict[str, Any] | RecordError]]:
    """Every ``record.json`` under ``root`` in path order; unreadable ones as errors."""
    for path in sorted(Path(root).rglob(RECORD_NAME)):
        try:
            yield path, read_record(path)
        except RecordError as exc:
            yield path, exc


# Settings a resumed run may change: they decide how long it runs or how it reports,
# not what the weights it continues from are.
RESUMABLE_CHANGES = frozenset({
    "train.max_steps", "train.progress", "train.flush_every", "data.num_workers",
    "generator.train.max_steps", "generator.train.epochs", "generator.train.progress",
    "generator.train.flush_every",
})
HISTORY_DIR = "record.history"


def record_job(
    kind: str, run_dir: str | Path, config: Any, job: Any, *, run_id: str | None = None, resumes: bool = False,
    say: Any = None,
) -> dict[str, Any]:
    """Run ``job() -> {"metrics", "results", "labels"[, "no_op"]}`` holding ``run_dir``'s
    lock, and leave ``run_dir/record.json``.

    A folder without a finished record gets ``config.toml`` and a "running" record first,
    so even a run that dies has its settings on disk. A finished ("ok") record is only
    replaced by the record of a job that succeeded and did something: a failed or refused
    rerun, or one whose output says ``no_op``, keeps it, the failure going to
    ``record.history/``; a replaced record moves there too. ``resumes``: the job continues
    the state in ``run_dir``, so it must run with the settings that state was made with
    (only :data:`RESUMABLE_CHANGES` may differ); otherwise it is refused before it starts.
    A failure is re-raised after it is recorded.
    """
    import time

    from glotok_bench.atomic import atomic_write_text
    from glotok_bench.config import dumps_toml, to_dict
    from glotok_bench.runlock import hold_run_folder

    say = say or _say
    run_dir = Path(run_dir)
    with _as_output_error(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    with hold_run_folder(run_dir, job=kind):
        previous = _finished_record(run_dir / RECORD_NAME)
        record = new_record(kind, run_id=run_id or run_dir.name, config=to_dict(config))
        started = time.perf_counter()
        try:
            if resumes:
                check_same_settings(run_dir, config)
            if previous is None:
                atomic_write_text(run_dir / "config.toml", dumps_toml(config))
                write_record(run_dir / RECORD_NAME, record)
            output = job()
        except BaseException as exc:
            mark_failed(record, exc)
            record["wall_time_s"] = time.perf_counter() - started
            if previous is None:
                write_record(run_dir / RECORD_NAME, record)
            else:
                kept = _to_history(run_dir, record)
                say(f"{run_dir / RECORD_NAME}: kept the finished record of {previous.get('created')}; "
                    f"this failed {kind} job is recorded in {kept}")
            raise
        if previous is not None and output.get("no_op"):
            say(f"{run_dir}: already finished, nothing to do; its record of {previous.get('created')} is kept")
            return previous
        record["metrics"].update(output.get("metrics", {}))
        record["results"][kind] = output.get("results", {})
        record["labels"] = output.get("labels", {})
        record["status"] = "ok"
        record["wall_time_s"] = time.perf_counter() - started
        if previous is not None:
            moved = _to_history(run_dir, previous)
            say(f"{run_dir / RECORD_NAME}: replaced; the previous record is in {moved}")
            atomic_write_text(run_dir / "config.toml", dumps_toml(config))
        write_record(run_dir / RECORD_NAME, record)
        return record


def check_same_settings(run_dir: Path, config: Any) -> None:
    """Refuse to continue ``run_dir`` with settings other than those it was made with."""
    import tomllib

    from glotok_bench.config import dumps_toml
    from glotok_bench.errors import ConfigError

    stored_path = run_dir / "config.toml"
    try:
        stored = tomllib.loads(stored_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{stored_path} cannot be read ({exc}); cannot tell what this run was made with") from None
    wanted = tomllib.loads(dumps_toml(config))  # the same normal form as the stored file
    changed = [key for key in _changed_keys(stored, wanted) if key not in RESUMABLE_CHANGES]
    if changed:
        shown = "; ".join(
            f"{key}: {_lookup(stored, key)!r} -> {_lookup(wanted, key)!r}" for key in changed[:5]
        ) + (f"; and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise ConfigError(
            f"{run_dir} holds a run made with other settings ({shown}); resuming would mix them. "
            f"Resume it with its own settings ({stored_path}) or use another --run-dir"
        )


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Keys set on both sides to different values. A key only one side has is a setting
    added or dropped by a newer version of this code, not a change the user made."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) & set(new))
        return [k for key in keys for k in _changed_keys(old[key], new[key], f"{prefix}.{key}" if prefix else key)]
    return [] if old == new else [prefix]


_MISSING = "<not set>"


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(data, dict) or key not in data:
            return _MISSING
        data = data[key]
    return data


def _finished_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path`` if it is a finished one, else None (absent, running, failed
    or unreadable: nothing a new job could downgrade)."""
    if not path.exists():
        return None
    try:
        record = read_record(path)
    except RecordError:
        return None
    return record if record.get("status") == "ok" else None


def _to_history(run_dir: Path, record: dict[str, Any]) -> Path:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path = run_dir / HISTORY_DIR / f"{stamp}-{record.get('kind')}-{record.get('status')}.json"
    write_record(path, record)
    return path


def _say(message: str) -> None:
    import sys

    print(message, file=sys.stderr)


@contextlib.contextmanager
def _as_output_error(path: Path) -> Iterator[None]:
    from glotok_bench.errors import OutputError

    try:
        yield
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
