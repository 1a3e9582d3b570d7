"""What every script in benchmarks/ shares: one measurement per child process, CSV rows
appended atomically, and the commit they were measured at."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from glotok_bench.atomic import atomic_write_text

_REPO = Path(__file__).resolve().parents[1]


def append_csv_rows(path: str | Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """Existing rows plus ``rows`` under one header, rewritten atomically (never half a CSV)."""
    path = Path(path)
    existing: list[dict] = []
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as handle:
            existing = list(csv.DictReader(handle))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(existing + list(rows))
    atomic_write_text(path, buffer.getvalue())


def git_commit() -> str:
    """Short hash of the checkout's HEAD, or "unknown" outside a git checkout."""
    from glotok_bench.records import code_revision

    return code_revision()["commit"][:7]


def run_child(script: str | Path, args: Sequence[str], *, label: str) -> dict:
    """Run ``python SCRIPT --child ARGS`` and return the JSON row it prints last.

    A fresh process per measurement keeps each peak-memory figure its own. A failed
    child ends the benchmark (exit status 1) with its stderr, before any row is written.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, str(script), "--child", *args]
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{label}: failed\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
