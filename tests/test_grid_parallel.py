"""Cells with 2 workers train data-parallel through Ray Train (gloo on CPU) and match the
same cells trained in one process, as the torchrun test does for hand-started runs: the
tokenizer with the cells in a local folder, the generator with the cells in S3 (a local
moto server), where a worker's files reach the driver only through the store and the
workers on one node share one copy of the cell. Each 2-worker cell reports every logged
step to its Tune trial, and one whose first attempt fails after a checkpoint resumes from
its stored checkpoint when the grid retries it."""

from __future__ import annotations

import collections
import json
import shutil
import tempfile
from pathlib import Path

import attrs
import pytest
import torch
from test_train_ddp import assert_identical

from glotok_bench.grid.runner import run_grid
from glotok_bench.store import open_store
from glotok_bench.train.metrics_log import read_log

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
BUCKET = "glotok-parallel"


@attrs.frozen(kw_only=True)
class DataParallelRun:
    name: str = "dp"
    seed: int = 0
    crash_at: int = 0  # the cell's first training attempt fails at this step (0: never)
    journal: str = ""  # a file where each run of the token step leaves a line


def tiny_train_step(context):
    """The real tokenizer trainer on a tiny model; no BatchNorm discriminator and no LPIPS,
    so the loss is a plain mean over images and two half-batch gradients average to the
    whole-batch gradient."""
    from torch import nn

    from glotok_bench.tokenizer import standalone_registry
    from glotok_bench.tokenizer.config import LossConfig
    from glotok_bench.tokenizer.model import load_tokenizer_config
    from glotok_bench.train.config import TrainConfig
    from glotok_bench.train.trainer import train

    torch.set_num_threads(1)
    coarse = torch.rand(8, 3, 4, 4, generator=torch.Generator().manual_seed(context.config.seed)) * 2 - 1
    images = nn.functional.interpolate(coarse, size=16, mode="bilinear", align_corners=False)
    result = train(
        load_tokenizer_config(TESTS / "configs" / "tiny-16.toml"), LossConfig(perceptual=False, adversarial_weight=0.0),
        TrainConfig(max_steps=4, batch_size=4, checkpoint_every=4, progress=False, lr=1e-3),
        torch.utils.data.TensorDataset(images, torch.arange(8)),
        run_dir=context.run_dir / "tokenizer", registry=standalone_registry(),
    )
    return {"results": result.as_record()}


def tiny_tokens_step(context):
    """Stands in for ``tokenize``: a small learnable token set in the cell's folder."""
    from test_generators_tokens import write_fake_tokens

    with open(context.config.journal, "a", encoding="utf-8") as journal:
        journal.write(f"{context.cell.cell_id}\n")
    return {"results": {"tokens": str(write_fake_tokens(context.run_dir / "tokens"))}}


def tiny_generator_step(context):
    """The real generator trainer on the cell's tokens, without dropout of any kind: its
    loss is then a plain mean over the batch, as the tokenizer's is above. A cell with
    ``crash_at`` fails at that step, after its step-2 checkpoint, on every rank at once
    the first time it trains (a transient fault): Ray Train then ends all workers while
    rank 0 still has to publish."""
    from test_generators_train import run_config

    from glotok_bench.generators.train import train_generator

    torch.set_num_threads(1)
    run_dir = context.run_dir / "generator"
    first_attempt = not any((run_dir / "checkpoints").glob("ckpt-*.pt"))
    tokens = Path(context.previous["tokenize"]["results"]["tokens"])
    with open(f"{context.config.journal}.copies", "a", encoding="utf-8") as copies:  # the copy this rank reads
        copies.write(f"{context.cell.cell_id} first={first_attempt} {tokens.stat().st_ino}\n")

    def fail_once(step, _trainer):
        if first_attempt and step == context.config.crash_at:
            raise RuntimeError(f"planned failure at step {step}")

    result = train_generator(
        run_config("far-tiny", steps=4, every=2, ema=True, dropout=0.0, class_dropout=0.0, token_dropout=0.0),
        context.previous["tokenize"]["results"]["tokens"], run_dir, on_step_end=fail_once,
    )
    return {"results": result.as_record()}


TOKENIZER_STEPS = {"train": tiny_train_step}
GENERATOR_STEPS = {"tokenize": tiny_tokens_step, "gen-train": tiny_generator_step}


@pytest.fixture(scope="module")
def s3_server():
    """A local S3 server (moto) for the module, with an empty bucket; yields its settings."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield env
    server.stop()


@pytest.fixture()
def local_ray(monkeypatch, s3_server):
    """A local Ray whose processes reach the S3 server; yields the bucket's URI."""
    import ray

    folder = Path(tempfile.mkdtemp(prefix="gtp-", dir="/tmp"))  # our own Ray temp folder and scratch
    # No periodic publishing: what reaches the store and Tune does so as a step ends, also
    # as a failed one does (the failure case tested below).
    env = {**s3_server, "GLOTOK_SCRATCH_DIR": str(folder / "scratch"), "GLOTOK_SYNC_INTERVAL_S": "3600"}
    for name, value in {**env, "RAY_TMPDIR": str(folder)}.items():
        monkeypatch.setenv(name, value)
    # 4 logical CPUs: two cells at once, each a trial (1 CPU) and 2 workers (0.5 each).
    # Workers import this module's steps by name; they start slowly on busy cores.
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {**env, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1",
                                       "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600"}})
    yield f"s3://{BUCKET}"
    ray.shutdown()
    shutil.rmtree(folder, ignore_errors=True)


def _grid(tmp_path: Path, name: str, steps: list[str], workers: int, axes: str) -> Path:
    base = tmp_path / f"{name}-{workers}.base.toml"
    base.write_text(f'name = "{name}"\njournal = "{tmp_path / f"{name}-{workers}.journal"}"\n')
    grid = tmp_path / f"{name}-{workers}.toml"
    grid.write_text(f'name = "{name}"\nbase = "{base}"\nsteps = {json.dumps(steps)}\n'
                    f'[resources]\ncpus = 0.5\nworkers = {workers}\nmax_retries = 1\n[axes]\n{axes}\n')
    return grid


def _tune_rows(runs: str, grid: str) -> list[list[dict]]:
    """Each trial's result rows, as Tune stored them beside the grid's cells."""
    store = open_store(runs).child(grid, "_ray")
    return [[json.loads(line) for line in store.read_text(name).splitlines()]
            for name in store.list(f"grid-{grid}") if name.endswith("/result.json")]


def _stored(location: str, name: str, tmp_path: Path) -> Path:
    """A local copy of a file of a cell's folder in the store."""
    target = tmp_path / "downloads" / location.rsplit("/", 1)[-1] / name
    open_store(location).download_file(name, target)
    return target


def _relative_difference(a: dict, b: dict) -> float:
    names = [n for n, t in a.items() if t.dtype.is_floating_point]
    flat_a, flat_b = (torch.cat([m[n].flatten() for n in names]) for m in (a, b))
    return float((flat_a - flat_b).norm() / flat_b.norm())


def test_two_worker_cell_matches_the_one_process_cell(tmp_path, local_ray):
    # The 2-worker cell as a Tune trial that launches Ray Train (what run-grid does).
    outcomes = {
        workers: run_grid(_grid(tmp_path, "dp", ["train"], workers, "seed = [0]"),
                          runs_root=tmp_path / f"runs-{workers}", executor=executor,
                          config_class=DataParallelRun, steps=TOKENIZER_STEPS, echo=lambda _: None)
        for workers, executor in ((2, "ray"), (1, "serial"))
    }
    records = {workers: outcome.records[0] for workers, outcome in outcomes.items()}
    assert records[2]["status"] == "ok", records[2].get("error", {}).get("traceback")
    assert records[2]["results"]["train"]["world_size"] == 2
    assert records[1]["results"]["train"]["world_size"] == 1
    folders = {w: tmp_path / f"runs-{w}" / "dp" / r["run_id"] / "tokenizer" for w, r in records.items()}
    # The record names the checkpoint rank 0 published in the cell's folder.
    assert records[2]["results"]["train"]["checkpoint"] == str(folders[2] / "checkpoints" / "ckpt-00000004.pt")
    ddp_log, single_log = read_log(folders[2] / "metrics.jsonl"), read_log(folders[1] / "metrics.jsonl")
    assert [line["step"] for line in ddp_log] == [1, 2, 3, 4]  # rank 0 alone wrote the log
    for key in ("rec", "quant", "total"):
        assert ddp_log[0][key] == pytest.approx(single_log[0][key], rel=1e-5), key
        assert [line[key] for line in ddp_log] == pytest.approx([line[key] for line in single_log], rel=2e-2), key
    a, b = (torch.load(folders[w] / "checkpoints" / "ckpt-00000004.pt", weights_only=True)["model"] for w in (2, 1))
    assert _relative_difference(a, b) < 2e-3
    # In a local folder the trial follows rank 0's log itself: one Tune row per step.
    (rows,) = _tune_rows(str(tmp_path / "runs-2"), "dp")
    assert [(row["tokenizer/step"], row["tokenizer/rec"]) for row in rows if "tokenizer/step" in row] == [
        (line["step"], line["rec"]) for line in ddp_log]


def test_two_worker_generator_cells_in_s3_report_to_tune_and_resume_exactly(tmp_path, local_ray):
    runs = f"{local_ray}/{tmp_path.name}"
    # Two 2-worker cells at once; the one with crash_at fails its first attempt at step 3.
    grid = _grid(tmp_path, "gen", ["tokenize", "gen-train"], 2, "crash_at = [0, 3]")
    outcome = run_grid(grid, runs_root=runs, executor="ray", config_class=DataParallelRun,
                       steps=GENERATOR_STEPS, echo=lambda _: None)
    records = {record["labels"]["crash_at"]: record for record in outcome.records}
    for record in records.values():
        assert record["status"] == "ok", record.get("error", {}).get("traceback")
        assert record["results"]["gen-train"]["world_size"] == 2
    straight, retried = records[0], records[3]
    cells = {crash_at: f"{runs}/gen/{record['run_id']}" for crash_at, record in records.items()}
    logs = {crash_at: read_log(_stored(cell, "generator/metrics.jsonl", tmp_path)) for crash_at, cell in cells.items()}
    checkpoints = {crash_at: torch.load(_stored(cell, "generator/checkpoints/ckpt-00000004.pt", tmp_path),
                                        weights_only=True) for crash_at, cell in cells.items()}

    # The retry resumed from the step-2 checkpoint its first attempt left in the store, and
    # ends with the files of the uninterrupted cell, bit for bit.
    assert retried["results"]["gen-train"]["resumed_from"] == 2
    assert retried["results"]["gen-train"]["steps_run"] == 2
    assert straight["results"]["gen-train"]["resumed_from"] is None
    for key in ("model", "ema", "step", "training"):
        assert_identical(checkpoints[3][key], checkpoints[0][key], key)
    without_time = {c: [{k: v for k, v in row.items() if k != "wall_s"} for row in log] for c, log in logs.items()}
    assert without_time[3] == without_time[0]
    assert [row["step"] for row in logs[0]] == [1, 2, 3, 4]
    # Nothing finished was done again: the token step ran once in each cell.
    journal = (tmp_path / "gen-2.journal").read_text().split()
    assert sorted(journal) == sorted(record["run_id"] for record in records.values())
    # In each of the three attempts both workers (on one node) read one copy of the cell.
    copies = collections.Counter((tmp_path / "gen-2.journal.copies").read_text().splitlines())
    assert sorted(copies.values()) == [2, 2, 2], copies

    # Rank 0's metrics reached each cell's trial, one Tune row per logged step: the retried
    # cell's first attempt (a trial process of its own) reported the steps it ran before it
    # failed, so they came from rank 0 itself, not from what the trial takes from the store
    # once the step is over, which that attempt never saw; its second attempt, the rest.
    trials = {record["run_id"]: [row for row in rows if "generator/step" in row]
              for rows in _tune_rows(runs, "gen") for record in records.values()
              if record["run_id"] in str(rows[0]["config"])}
    assert trials.keys() == {straight["run_id"], retried["run_id"]}
    for rows in trials.values():
        assert [row["generator/step"] for row in rows] == [1, 2, 3, 4]
    first_pid = trials[retried["run_id"]][0]["pid"]
    assert [row["pid"] == first_pid for row in trials[retried["run_id"]]] == [True, True, True, False]
    for rows in trials.values():
        for row, line in zip(rows, logs[0], strict=True):
            assert {key: row[f"generator/{key}"] for key in ("loss", "grad_norm", "lr")} == {
                key: line[key] for key in ("loss", "grad_norm", "lr")}

    # The same cell in one process: the same losses and nearly the same weights.
    single = run_grid(_grid(tmp_path, "gen", ["tokenize", "gen-train"], 1, "crash_at = [0]"),
                      runs_root=tmp_path / "runs-1", executor="serial", config_class=DataParallelRun,
                      steps=GENERATOR_STEPS, echo=lambda _: None).records[0]
    assert single["status"] == "ok" and single["results"]["gen-train"]["world_size"] == 1
    single_folder = tmp_path / "runs-1" / "gen" / single["run_id"] / "generator"
    single_log = read_log(single_folder / "metrics.jsonl")
    assert logs[0][0]["loss"] == pytest.approx(single_log[0]["loss"], rel=1e-5)
    assert [line["loss"] for line in logs[0]] == pytest.approx([line["loss"] for line in single_log], rel=2e-2)
    single_checkpoint = torch.load(single_folder / "checkpoints" / "ckpt-00000004.pt", weights_only=True)
    assert _relative_difference(checkpoints[0]["model"], single_checkpoint["model"]) < 2e-3

    # Run again, every cell is done and none runs.
    again = run_grid(grid, runs_root=runs, executor="ray", config_class=DataParallelRun, steps=GENERATOR_STEPS,
                     echo=lambda _: None)
    assert sorted(again.skipped) == sorted(record["run_id"] for record in records.values())
