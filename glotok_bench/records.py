"""Run records: one JSON file per job holding its results and everything behind them.

Every metric is stored as ``{"value": ..., "protocol": {...}}`` so a number never
travels without the data, split, count, resolution, crop and feature extractor it was
measured with. Leaderboards are regenerated from these files and nothing else.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
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
        "environment": {"versions": package_versions(), "host": platform.node(), "platform": platform.platform()},
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


def record_job(
    kind: str, run_dir: str | Path, config: Any, job: Any, *, run_id: str | None = None
) -> dict[str, Any]:
    """Run ``job() -> {"metrics", "results", "labels"}`` and leave ``run_dir/record.json``.

    The resolved config is written beside it first (``config.toml``), so even a run that
    dies has its settings on disk. A failure is recorded with its traceback and re-raised.
    """
    import time

    from glotok_bench.atomic import atomic_write_text
    from glotok_bench.config import dumps_toml, to_dict

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.toml", dumps_toml(config))
    record = new_record(kind, run_id=run_id or run_dir.name, config=to_dict(config))
    write_record(run_dir / RECORD_NAME, record)
    started = time.perf_counter()
    try:
        output = job()
    except BaseException as exc:
        mark_failed(record, exc)
        record["wall_time_s"] = time.perf_counter() - started
        write_record(run_dir / RECORD_NAME, record)
        raise
    record["metrics"].update(output.get("metrics", {}))
    record["results"][kind] = output.get("results", {})
    record["labels"] = output.get("labels", {})
    record["status"] = "ok"
    record["wall_time_s"] = time.perf_counter() - started
    write_record(run_dir / RECORD_NAME, record)
    return record
