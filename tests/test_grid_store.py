"""The store under grids: local folders and URIs, publishing a working folder, and what
the driver reports for a cell that left no record. Fast: pyarrow's in-memory filesystem
stands in for an object store (the S3 path runs in test_grid_cluster.py)."""

from __future__ import annotations

import time

import pytest

from glotok_bench.grid.publish import CellSync, workspace
from glotok_bench.store import open_store
from glotok_bench.train.metrics_log import truncate_log


def test_local_locations_become_absolute_folders_and_uris_stay_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert open_store("runs").location == str(tmp_path / "runs")
    assert open_store("runs").local_path == tmp_path / "runs"
    assert open_store(f"file://{tmp_path}/x").location == str(tmp_path / "x")
    remote = open_store("s3://bucket/runs/")
    assert remote.location == "s3://bucket/runs" and not remote.is_local and remote.local_path is None
    assert remote.child("grid", "cell").uri("record.json") == "s3://bucket/runs/grid/cell/record.json"


@pytest.mark.parametrize("location", ["local", "mock:///bucket/cell"])
def test_files_round_trip_and_nothing_half_written_is_visible(tmp_path, location):
    store = open_store(tmp_path / "store" if location == "local" else location)
    store.write_text("steps/train.json", "{}")
    store.write_bytes("tokenizer/ckpt.pt", b"\x00" * 10)
    assert store.list() == ["steps/train.json", "tokenizer/ckpt.pt"]
    assert store.read_text("steps/train.json") == "{}" and store.exists("tokenizer/ckpt.pt")
    with pytest.raises(FileNotFoundError):
        store.read_bytes("record.json")
    store.download_dir(tmp_path / "copy", skip=frozenset({"steps/train.json"}))
    assert sorted(p.name for p in (tmp_path / "copy").rglob("*") if p.is_file()) == ["ckpt.pt"]
    store.delete("tokenizer/ckpt.pt")
    assert store.list() == ["steps/train.json"]
    if location == "local":
        assert [p.name for p in (tmp_path / "store").rglob(".*")] == []  # no temp files left


def test_a_working_folder_is_published_while_it_runs_and_metrics_become_tune_reports(
        tmp_path, monkeypatch):
    monkeypatch.setenv("GLOTOK_SCRATCH_DIR", str(tmp_path / "scratch"))
    store = open_store("mock:///bucket/runs/grid/cell-a")
    store.write_text("tokenizer/checkpoints/ckpt-00000002.pt", "old")
    store.write_text("record.json", "{}")
    reports: list[dict] = []
    with workspace(store, "grid/cell-a") as work:
        assert work == tmp_path / "scratch" / "grid" / "cell-a"
        # The stored checkpoint came back (to resume from); the record did not.
        assert (work / "tokenizer" / "checkpoints" / "ckpt-00000002.pt").read_text() == "old"
        assert not (work / "record.json").exists()
        with CellSync(work, store, report=reports.append, interval_s=3600) as sync:
            (work / "tokenizer" / "checkpoints" / "ckpt-00000004.pt").write_text("new")
            (work / "tokenizer" / "checkpoints" / "ckpt-00000002.pt").unlink()  # rotated out
            (work / "tokenizer" / "checkpoints" / ".ckpt-00000006.pt.tmp").write_text("half")
            (work / "tokenizer" / "metrics.jsonl").write_text(
                '{"step": 1, "rec": 0.5, "gan": false}\n{"step": 2, "rec": 0.25, "gan": false}\n{"step": 3, "re')
            sync.sync()
            # One report per logged step (the line being written waits for the next pass).
            assert reports == [{"tokenizer/rec": 0.5, "tokenizer/step": 1},
                               {"tokenizer/rec": 0.25, "tokenizer/step": 2}]
            with open(work / "tokenizer" / "metrics.jsonl", "a") as log:
                log.write('c": 0.125}\n{"step": 4, "rec": 0.0625}\n')
            sync.sync()
            # A resume from step 3 cuts the log back and logs step 4 again: reported once.
            truncate_log(work / "tokenizer" / "metrics.jsonl", 3)
            with open(work / "tokenizer" / "metrics.jsonl", "a") as log:
                log.write('{"step": 4, "rec": 0.0625}\n{"step": 5, "rec": 0.03125}\n')
            sync.sync()
            assert [(report["tokenizer/step"], report["tokenizer/rec"]) for report in reports] == [
                (1, 0.5), (2, 0.25), (3, 0.125), (4, 0.0625), (5, 0.03125)]
            stored = store.list()
            assert "tokenizer/checkpoints/ckpt-00000004.pt" in stored
            assert "tokenizer/checkpoints/ckpt-00000002.pt" not in stored
            assert not any(".tmp" in name for name in stored)
    assert not work.exists()  # scratch is freed: the store has everything


def test_a_cell_that_left_no_record_is_reported_by_its_id(tmp_path):
    from glotok_bench.grid.executors import _read_cell_record
    from glotok_bench.grid.spec import Cell

    cell = Cell(grid="g", cell_id="abc123", base=tmp_path, overrides=(), labels={}, steps=("train",),
                location=str(tmp_path / "g" / "abc123"), config={})
    record = _read_cell_record(cell)
    assert record["status"] == "failed" and record["run_id"] == "abc123"
    assert "abc123" in record["error"]["message"] and str(tmp_path) in record["error"]["message"]


def test_a_cell_in_s3_is_held_by_one_job_at_a_time(monkeypatch):
    import boto3
    from moto import mock_aws

    from glotok_bench.grid.celllock import hold_cell
    from glotok_bench.runlock import RunLockedError

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="runs")
        store = open_store("s3://runs/grid/cell-a")
        notes: list[str] = []
        with hold_cell(store, "grid cell a", notes):
            started = time.monotonic()
            with pytest.raises(RunLockedError, match=r"in use by a grid cell a job \(host .*, pid \d+"):
                with hold_cell(store, "grid cell a", notes, lease_s=0.5):
                    pass
            assert time.monotonic() - started >= 1.0  # waited two lease periods for the holder
        with hold_cell(store, "grid cell a", notes):  # released: the next job takes it
            pass
        assert notes == []
        assert boto3.client("s3").list_objects_v2(Bucket="runs").get("KeyCount") == 0
