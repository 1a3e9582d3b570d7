"""Grid expansion and execution, with fake steps so it runs in milliseconds."""

from __future__ import annotations

import os
import time
from pathlib import Path

import attrs
import pytest

from glotok_bench.errors import ConfigError
from glotok_bench.grid.runner import run_grid
from glotok_bench.grid.spec import expand, load_grid


@attrs.frozen(kw_only=True)
class Train:
    steps: int = 3
    lr: float = 0.1


@attrs.frozen(kw_only=True)
class TinyRun:
    name: str = "tiny"
    seed: int = 0
    train: Train = attrs.Factory(Train)
    fail: bool = False


CALLS: list[tuple[str, str]] = []


def fake_train(context):
    CALLS.append(("train", context.cell.cell_id))
    if context.config.fail:
        raise RuntimeError("this cell is configured to fail")
    return {"results": {"steps": context.config.train.steps, "cwd": os.getcwd()}, "labels": {"method": "fake"}}


def fake_eval(context):
    CALLS.append(("eval", context.cell.cell_id))
    lr = context.config.train.lr
    return {"metrics": {"loss": {"value": lr * 10 + context.config.seed, "protocol": {"dataset": "none"}}}}


STEPS = {"train": fake_train, "eval": fake_eval}


def write_grid(tmp_path, axes: str, extra: str = "") -> Path:
    (tmp_path / "base.toml").write_text('name = "tiny"\n[train]\nsteps = 2\n')
    grid = tmp_path / "grid.toml"
    grid.write_text(f'name = "g"\nbase = "base.toml"\nsteps = ["train", "eval"]\n{extra}\n[axes]\n{axes}\n')
    return grid


def test_expansion_is_the_cross_product_with_content_ids(tmp_path):
    grid = write_grid(tmp_path, '"train.lr" = [0.1, 0.2]\nseed = [0, 1, 2]')
    cells = expand(load_grid(grid), TinyRun, tmp_path / "runs")
    assert len(cells) == 6 and len({c.cell_id for c in cells}) == 6
    assert {(c.labels["train.lr"], c.labels["seed"]) for c in cells} == {
        (lr, s) for lr in (0.1, 0.2) for s in (0, 1, 2)
    }
    again = expand(load_grid(grid), TinyRun, tmp_path / "runs")
    assert [c.cell_id for c in again] == [c.cell_id for c in cells]
    assert all(c.config["train"]["steps"] == 2 for c in cells)


def test_a_typo_in_an_axis_fails_before_anything_runs(tmp_path):
    grid = write_grid(tmp_path, '"train.lrr" = [0.1]')
    with pytest.raises(ConfigError, match=r"train\.lrr: unknown key\. Did you mean 'lr'"):
        run_grid(grid, runs_root=tmp_path / "runs", executor="serial", config_class=TinyRun, steps=STEPS)
    with pytest.raises(ConfigError, match="resources.gpu: unknown key"):
        load_grid(write_grid(tmp_path, "seed = [0]", "[resources]\ngpu = 1"))


def test_serial_run_records_failures_without_sinking_the_grid_and_skips_done_cells(tmp_path):
    CALLS.clear()
    grid = write_grid(tmp_path, "fail = [false, true]\nseed = [0, 1]")
    outcome = run_grid(grid, runs_root=tmp_path / "runs", executor="serial", config_class=TinyRun,
                       steps=STEPS, echo=lambda _: None)
    assert len(outcome.records) == 4 and len(outcome.failed) == 2
    failed = outcome.failed[0]
    assert failed["error"]["type"] == "RuntimeError" and "configured to fail" in failed["error"]["traceback"]
    ok = [r for r in outcome.records if r["status"] == "ok"]
    assert {r["metrics"]["loss"]["value"] for r in ok} == {1.0, 2.0}
    assert all(r["labels"]["method"] == "fake" and r["results"]["train"] == {"steps": 2, "cwd": os.getcwd()} for r in ok)
    calls_before = len(CALLS)
    again = run_grid(grid, runs_root=tmp_path / "runs", executor="serial", config_class=TinyRun,
                     steps=STEPS, echo=lambda _: None)
    # finished cells are not recomputed; failed ones are retried (failures are often transient)
    retried = CALLS[calls_before:]
    assert sorted(step for step, _ in retried) == ["train", "train"]
    assert {cell for _, cell in retried} == {r["run_id"] for r in outcome.failed}
    assert len(again.skipped) == 2


def test_finished_steps_are_not_rerun_after_an_interruption(tmp_path):
    CALLS.clear()
    grid = write_grid(tmp_path, "seed = [0]")
    cell = expand(load_grid(grid), TinyRun, tmp_path / "runs")[0]

    def exploding_eval(context):
        raise KeyboardInterrupt  # the process dies between steps

    with pytest.raises(KeyboardInterrupt):
        from glotok_bench.grid.cells import run_cell

        run_cell(cell, TinyRun, {"train": fake_train, "eval": exploding_eval})
    # A record means a complete cell: none yet, but the finished step is remembered.
    assert not (cell.run_dir / "record.json").exists()
    assert (cell.run_dir / "steps" / "train.json").is_file()
    CALLS.clear()
    outcome = run_grid(grid, runs_root=tmp_path / "runs", executor="serial", config_class=TinyRun,
                       steps=STEPS, echo=lambda _: None)
    assert CALLS == [("eval", cell.cell_id)]
    assert outcome.records[0]["status"] == "ok"


def test_an_unreadable_step_marker_reruns_its_step_and_says_which_file(tmp_path):
    grid = write_grid(tmp_path, "seed = [0]")
    cell = expand(load_grid(grid), TinyRun, tmp_path / "runs")[0]

    def exploding_eval(context):
        raise KeyboardInterrupt

    from glotok_bench.grid.cells import run_cell

    with pytest.raises(KeyboardInterrupt):
        run_cell(cell, TinyRun, {"train": fake_train, "eval": exploding_eval})
    marker = cell.run_dir / "steps" / "train.json"
    marker.write_text('{"results": {"steps"')  # torn
    CALLS.clear()
    with pytest.warns(UserWarning, match=r"steps/train\.json is unreadable"):
        record = run_cell(cell, TinyRun, STEPS)
    assert CALLS == [("train", cell.cell_id), ("eval", cell.cell_id)]
    assert record["status"] == "ok" and record["results"]["train"] == {"steps": 2, "cwd": os.getcwd()}
    assert str(marker) in record["notes"][0]


@pytest.fixture()
def own_ray_temp(monkeypatch):
    """Ray's temp folder (and so its address file) in a folder of this test's own, so the
    test can plant a stale address file without touching anyone's /tmp/ray."""
    import shutil
    import tempfile

    import ray

    folder = Path(tempfile.mkdtemp(prefix="gtr-", dir="/tmp"))  # short: Ray's socket paths
    monkeypatch.setenv("RAY_TMPDIR", str(folder))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield folder
    ray.shutdown()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_ray_executor_gives_the_same_records_and_rejects_missing_gpus(tmp_path, own_ray_temp, monkeypatch):
    # A dead head's address file: Ray's default would try to join it.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    (own_ray_temp / "ray").mkdir()
    (own_ray_temp / "ray" / "ray_current_cluster").write_text(dead)
    # Workers unpickle this module's step functions by name: the grid's runtime_env gives
    # them its folder, as it would give them a plugin package.
    tests_dir = str(Path(__file__).resolve().parent)
    extra = f'[resources]\ncpus = 1\n[runtime_env]\nenv_vars = {{PYTHONPATH = "{tests_dir}"}}'
    grid = write_grid(tmp_path, '"train.lr" = [0.1, 0.2]\nfail = [false, true]', extra)
    lines: list[str] = []
    monkeypatch.delenv("RAY_CHDIR_TO_TRIAL_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # trials keep it: a relative path in a grid means the same as in serial
    outcome = run_grid(grid, runs_root=tmp_path / "runs", executor="ray", config_class=TinyRun,
                       steps=STEPS, echo=lines.append)
    assert any(f"not joining {dead}" in line and "no Ray head answers" in line for line in lines)
    assert len(outcome.records) == 4
    ok = sorted(r["metrics"]["loss"]["value"] for r in outcome.records if r["status"] == "ok")
    assert ok == [1.0, 2.0]
    assert {r["results"]["train"]["cwd"] for r in outcome.records if r["status"] == "ok"} == {str(tmp_path)}
    assert all("configured to fail" in r["error"]["traceback"] for r in outcome.failed)
    assert any("2 done / 0 running / 2 failed of 4" in line for line in lines)

    (tmp_path / "gpu").mkdir()
    gpu_grid = write_grid(tmp_path / "gpu", "seed = [5]", "[resources]\ngpus = 1")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"asks for 1 GPU\(s\) but this machine's local Ray has 0"):
        run_grid(gpu_grid, runs_root=tmp_path / "runs", executor="ray", config_class=TinyRun, steps=STEPS,
                 echo=lambda _: None)
    assert time.perf_counter() - started < 30


@pytest.mark.slow
def test_the_serial_executor_gives_multi_worker_cells_the_grids_runtime_env(tmp_path, own_ray_temp):
    import ray

    def eval_in_driver(context):
        # Ray Train's workers inherit the job's runtime environment, which this reads.
        env_vars = ray.get_runtime_context().runtime_env.get("env_vars", {})
        return {"metrics": {"loss": {"value": float(env_vars.get("GLOTOK_TEST_MARK", "nan")), "protocol": {}}}}

    (tmp_path / "base.toml").write_text('name = "tiny"\n')
    grid = tmp_path / "grid.toml"
    grid.write_text('name = "g"\nbase = "base.toml"\nsteps = ["eval"]\n'
                    '[resources]\nworkers = 2\n[runtime_env]\nenv_vars = {GLOTOK_TEST_MARK = "7"}\n')  # fmt: skip
    outcome = run_grid(grid, runs_root=tmp_path / "runs", executor="serial", config_class=TinyRun,
                       steps={"eval": eval_in_driver}, echo=lambda _: None)  # fmt: skip
    assert [r["metrics"]["loss"]["value"] for r in outcome.records] == [7.0]


def test_multi_worker_cells_run_only_as_many_at_once_as_their_workers_fit():
    from glotok_bench.grid.executors import concurrent_cells

    # Each 2-worker cell holds 2 x 1 CPU for its workers and 1 for its trial.
    assert concurrent_cells({"CPU": 8.0}, cpus=1, gpus=0, workers=2) == 2
    assert concurrent_cells({"CPU": 64.0, "GPU": 16.0}, cpus=4, gpus=1, workers=8) == 1  # 33 CPUs each
    assert concurrent_cells({"CPU": 200.0, "GPU": 16.0}, cpus=4, gpus=1, workers=8) == 2
    assert concurrent_cells({"CPU": 2.0}, cpus=4, gpus=0, workers=1) is None  # Tune packs these itself


def test_a_multi_worker_cell_counts_its_trial_cpu_when_checking_the_cluster():
    from glotok_bench.grid.executors import RayExecutor

    executor = RayExecutor(address=None, cpus=1, gpus=0, max_retries=0, storage="unused", workers=2)
    executor._check_resources({"CPU": 3.0})
    with pytest.raises(ConfigError, match=r"asks for 3 CPU\(s\) \(2 workers x 1 \+ 1 for its trial\) .* has 2"):
        executor._check_resources({"CPU": 2.0})


def test_committed_cpu_results_still_match_their_grids():
    """Committed leaderboard records are keyed by config id: a change to config defaults
    that alters the ids would orphan them (and double-count re-runs), so it must be noticed
    and the CPU grids re-run."""
    from pathlib import Path

    from glotok_bench.runconfig import RunConfig

    repo = Path(__file__).resolve().parents[1]
    archive = repo / "leaderboards" / "records"
    for grid in sorted((repo / "grids" / "cpu").glob("*.toml")):
        spec = load_grid(grid)
        committed = {p.name for p in (archive / spec.name).iterdir() if p.is_dir()} if (archive / spec.name).is_dir() else set()
        ids = {cell.cell_id for cell in expand(spec, RunConfig, repo / "runs")}
        shared = {p.name for other in archive.iterdir() if other.is_dir() for p in other.iterdir()}
        assert committed, f"{grid.name}: no committed records under {archive / spec.name}"
        assert ids <= shared, f"{grid.name}: cells {sorted(ids - shared)} have no committed record"
