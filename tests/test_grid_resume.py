"""Kill a real grid mid-training, run it again, and get the uninterrupted result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glotok_bench.grid.runner import run_grid
from glotok_bench.leaderboard.build import regenerate
from glotok_bench.records import read_record

REPO = Path(__file__).resolve().parents[1]


def _write_grid(tmp_path: Path, demo_root: Path) -> Path:
    """Two cells of a deliberately tiny GloTok on the demo data, with a teacher cache."""
    base = tmp_path / "tiny.toml"
    base.write_text(f'''
extends = "{REPO / "tests" / "configs" / "tiny-glotok.toml"}"
cache_dir = "{tmp_path / "cache"}"
[data]
eval_batch_size = 32
[data.dataset]
cache_dir = "{demo_root}"
max_images = 32
[train]
batch_size = 4
max_steps = 120
checkpoint_every = 10
[eval]
inception_score = false
uniformity = false
fig4 = false
sample_images = 0
lpips = false
[eval.fid]
extractor = "standin"
cache = false
''')
    grid = tmp_path / "grid.toml"
    grid.write_text(f'''
name = "resume"
base = "{base}"
steps = ["train", "eval"]
[axes]
"loss.semantic_weight" = [0.0, 0.01]
''')
    return grid


def _checkpoints(cell_dir: Path) -> list[Path]:
    return sorted((cell_dir / "tokenizer" / "checkpoints").glob("ckpt-*.pt"))


@pytest.mark.slow
def test_killed_grid_resumes_to_the_uninterrupted_leaderboard(tmp_path, demo_root):
    grid = _write_grid(tmp_path, demo_root)
    quiet = {"echo": lambda _: None}

    reference = run_grid(grid, runs_root=tmp_path / "a", executor="serial", **quiet)
    assert [r["status"] for r in reference.records] == ["ok", "ok"]

    runs = tmp_path / "b"
    process = subprocess.Popen(
        [sys.executable, "-m", "glotok_bench", "run-grid", str(grid), "--runs", str(runs),
         "--executor", "serial", "--no-leaderboard"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    cells = sorted(reference.records, key=lambda r: r["labels"]["lambda_hist"])
    first, second = (runs / "resume" / r["run_id"] for r in cells)
    deadline = time.monotonic() + 240
    # Kill once the first cell is done and the second has written a checkpoint mid-way.
    while not (read_ok(first) and len(_checkpoints(second)) >= 1):
        assert process.poll() is None, "the grid finished before it could be interrupted"
        assert time.monotonic() < deadline, "the grid made no progress"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (second / "record.json").exists()  # a record means a complete cell
    first_record = (first / "record.json").read_bytes()

    resumed = run_grid(grid, runs_root=runs, executor="serial", **quiet)
    assert resumed.skipped == [first.name]
    assert (first / "record.json").read_bytes() == first_record  # not recomputed
    train = read_record(second / "record.json")["results"]["train"]
    assert train["resumed_from"] is not None and 0 < train["resumed_from"] < 120
    assert train["final_step"] == 120

    regenerate(tmp_path / "a", tmp_path / "board-a")
    regenerate(runs, tmp_path / "board-b")
    for table in ("reconstruction.csv", "ablation_histogram.csv"):
        assert (tmp_path / "board-a" / table).read_bytes() == (tmp_path / "board-b" / table).read_bytes()


def read_ok(cell_dir: Path) -> bool:
    try:
        return read_record(cell_dir / "record.json")["status"] == "ok"
    except Exception:  # noqa: BLE001 - not written yet, or mid-write
        return False
