"""A grid on a real 2-node Ray cluster whose nodes share no folder, with results in S3.

The head has no CPUs, so every cell runs on the worker node; the worker has its own
working directory and HOME, and the store is a local S3 server (moto). Everything this
module starts (moto, both Ray nodes, the drivers) runs in its own process group, on its
own ports and Ray temp folder, and is killed by group at teardown: other Ray instances
on the machine are never touched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUCKET = "glotok-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{what} did not start listening on port {port}")


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=60)


class Cluster:
    def __init__(self, root: Path):
        self.root = root
        self.temp_dir = Path(tempfile.mkdtemp(prefix="gtray-", dir="/tmp"))  # short: socket paths
        self.s3_port, self.gcs_port = _free_port(), _free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.processes: list[subprocess.Popen] = []
        self.env = {
            **os.environ,
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
            # Notice a dead node within seconds, not the default half minute.
            "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4",
            "OMP_NUM_THREADS": "1", "GLOTOK_SYNC_INTERVAL_S": "0.5",
            "PYTHONPATH": str(REPO),
        }
        self.env.pop("RAY_ADDRESS", None)
        self.worker: subprocess.Popen | None = None

    def _spawn(self, command: list[str], *, cwd: Path, env: dict[str, str], log: str) -> subprocess.Popen:
        out = open(self.root / log, "ab")  # noqa: SIM115 - kept open for the process's life
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append(process)
        return process

    def _node_ports(self) -> list[str]:
        """Free ports for one node. Ray refuses a node whose fixed ports fall inside its own
        worker-port range, so none may (a random pick did, once, under load)."""
        low = _free_port()
        while low + 200 > 65535:
            low = _free_port()
        taken = set(range(low, low + 201))
        ports = []
        for name in ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
                     "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port"):
            port = _free_port()
            while port in taken:
                port = _free_port()
            taken.add(port)
            ports.append(f"--{name}={port}")
        return [*ports, f"--min-worker-port={low}", f"--max-worker-port={low + 200}"]

    def start(self) -> None:
        self._spawn([str(BIN / "moto_server"), "-p", str(self.s3_port)], cwd=self.root, env=self.env,
                    log="moto.log")
        _wait_for_port(self.s3_port, "moto")
        import boto3

        boto3.client("s3", endpoint_url=self.env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                     aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        head_dir = self.root / "head"
        head_dir.mkdir()
        self._spawn([str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=0",
                     f"--port={self.gcs_port}", "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp_dir}",
                     "--include-dashboard=false", f"--ray-client-server-port={_free_port()}",
                     *self._node_ports()], cwd=head_dir, env=self.env, log="head.log")
        _wait_for_port(self.gcs_port, "the Ray head")
        self.start_worker()

    def start_worker(self, attempts: int = 3) -> None:
        """A node with its own working directory, HOME and scratch: nothing shared. Returns
        once its CPUs are in the cluster (a driver checks resources at once); a node that
        dies while starting (a port taken between our pick and its bind) is started again."""
        worker_dir = self.root / "worker"
        (worker_dir / "home").mkdir(parents=True, exist_ok=True)
        env = {**self.env, "HOME": str(worker_dir / "home"), "TMPDIR": str(worker_dir)}
        for name in ("GLOTOK_CACHE_DIR", "GLOTOK_DATA_DIR", "GLOTOK_STATS_DIR"):
            env.pop(name, None)
        for _ in range(attempts):
            self.worker = self._spawn(
                [str(BIN / "ray"), "start", "--block", f"--address={self.address}", "--num-cpus=2",
                 "--node-ip-address=127.0.0.1", *self._node_ports()], cwd=worker_dir, env=env,
                log="worker.log")
            if self._wait_for_cluster_cpus("CPU >= 2", watch=self.worker):
                return
        raise AssertionError(f"the worker node never joined; see {self.root / 'worker.log'}")

    def _wait_for_cluster_cpus(self, condition: str, *, watch: subprocess.Popen | None = None,
                               timeout: float = 300) -> bool:
        """Until the cluster's CPU count meets ``condition``; False if ``watch`` dies first."""
        script = (
            "import ray, time\n"
            f"ray.init(address='{self.address}', log_to_driver=False)\n"
            f"deadline = time.monotonic() + {timeout}\n"
            "while True:\n"
            "    CPU = ray.cluster_resources().get('CPU', 0)\n"
            f"    if {condition}:\n"
            "        break\n"
            "    assert time.monotonic() < deadline, 'timed out'\n"
            "    time.sleep(0.5)\n"
        )
        waiter = subprocess.Popen([sys.executable, "-c", script], cwd=self.root, env=self.env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while waiter.poll() is None:
                if watch is not None and watch.poll() is not None:
                    return False
                time.sleep(0.5)
        finally:
            if waiter.poll() is None:
                waiter.kill()
                waiter.wait()
        if waiter.returncode != 0:
            raise AssertionError(f"the cluster never reached {condition} within {timeout:g} s")
        return watch is None or watch.poll() is None

    def kill_worker(self) -> None:
        _kill_group(self.worker)
        # Until the head has dropped the dead node, so that start_worker sees the new one.
        self._wait_for_cluster_cpus("CPU == 0")

    def stop(self) -> None:
        for process in reversed(self.processes):
            _kill_group(process)
        subprocess.run(["rm", "-rf", str(self.temp_dir)], check=False)

    def run_grid(self, grid: Path, *args: str, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
        """The driver, as a user runs it, from a folder of its own."""
        driver_dir = self.root / "driver"
        driver_dir.mkdir(exist_ok=True)
        command = [str(BIN / "glotok-bench"), "run-grid", str(grid), "--address", self.address,
                   "--runs", f"s3://{BUCKET}/runs", *args]
        if not wait:
            return self._spawn(command, cwd=driver_dir, env=self.env, log="driver.log")
        return subprocess.run(command, cwd=driver_dir, env=self.env, capture_output=True, text=True,
                              timeout=600)

    def s3(self):  # noqa: ANN201
        import pyarrow.fs

        os.environ.update({k: v for k, v in self.env.items() if k.startswith("AWS_")})
        return pyarrow.fs.FileSystem.from_uri(f"s3://{BUCKET}")[0]

    def stored(self, prefix: str = "runs") -> list[str]:
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True)
        return sorted(i.path[len(BUCKET) + 1:] for i in self.s3().get_file_info(selector)
                      if i.type == pyarrow.fs.FileType.File)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _grid(root: Path, demo_root: Path, name: str, *, steps: int, retries: int, cpus: int) -> Path:
    base = root / f"{name}.toml"
    base.write_text(f'''
extends = "{REPO / "tests" / "configs" / "tiny-glotok.toml"}"
[data]
eval_batch_size = 32
[data.dataset]
cache_dir = "{demo_root}"
max_images = 32
[train]
batch_size = 4
max_steps = {steps}
checkpoint_every = 5
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
    grid = root / f"{name}-grid.toml"
    grid.write_text(f'''
name = "{name}"
base = "{base}"
steps = ["train", "eval"]
[resources]
cpus = {cpus}
max_retries = {retries}
[axes]
"loss.semantic_weight" = [0.0, 0.01]
''')
    return grid


def test_cells_run_on_a_worker_that_shares_no_folder_and_land_in_the_store(cluster, tmp_path, demo_root):
    grid = _grid(tmp_path, demo_root, "remote", steps=10, retries=0, cpus=1)
    boards = tmp_path / "boards"
    first = cluster.run_grid(grid, "--leaderboards", str(boards))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "2 cells ok, 0 failed" in first.stdout
    stored = cluster.stored()
    records = [p for p in stored if p.endswith("/record.json")]
    assert len(records) == 2
    cells = [p.split("/")[2] for p in records]
    for cell in cells:  # the whole cell was published, not only its record
        assert f"runs/remote/{cell}/steps/eval.json" in stored
        assert any(p.startswith(f"runs/remote/{cell}/tokenizer/checkpoints/ckpt-") for p in stored)
        assert any(p.startswith(f"runs/remote/{cell}/tokenizer/tensorboard/events.out.tfevents") for p in stored)
    # Tune's storage is the store too, and it saw training's metrics as they were logged.
    tune_results = [p for p in stored if p.startswith("runs/remote/_ray/") and p.endswith("/result.json")]
    assert len(tune_results) == 2
    for path in tune_results:
        assert b'"tokenizer/rec"' in cluster.s3().open_input_stream(f"{BUCKET}/{path}").read()
    assert not (tmp_path / "driver" / "runs").exists()
    reconstruction = (boards / "reconstruction.csv").read_text()
    assert all(cell in reconstruction for cell in cells)

    again = cluster.run_grid(grid, "--no-leaderboard")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "2 already done, 0 to run" in again.stdout


def test_a_killed_worker_node_resumes_its_cell_from_the_store(cluster, tmp_path, demo_root):
    # cpus=2: the worker runs one cell at a time, so one is finished when the other is killed.
    grid = _grid(tmp_path, demo_root, "killed", steps=40, retries=2, cpus=2)
    driver = cluster.run_grid(grid, "--no-leaderboard", wait=False)
    deadline = time.monotonic() + 900

    def progress() -> tuple[list[str], list[str]]:
        stored = cluster.stored("runs/killed")
        done = [p.split("/")[2] for p in stored if p.endswith("/record.json")]
        checkpointed = {p.split("/")[2] for p in stored if "/tokenizer/checkpoints/ckpt-" in p}
        return done, sorted(checkpointed - set(done))

    while True:
        done, running = progress()
        if len(done) == 1 and running:
            break
        assert driver.poll() is None, (cluster.root / "driver.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "the grid made no progress"
        time.sleep(0.2)
    finished_record = cluster.s3().open_input_stream(f"{BUCKET}/runs/killed/{done[0]}/record.json").read()
    cluster.kill_worker()
    cluster.start_worker()
    # Generous: on 2 busy cores a Ray node restart and a trial retry can take minutes.
    assert driver.wait(timeout=900) == 0, (cluster.root / "driver.log").read_text()[-3000:]

    import json

    again = cluster.s3().open_input_stream(f"{BUCKET}/runs/killed/{done[0]}/record.json").read()
    assert again == finished_record  # the finished cell was not recomputed
    record = json.loads(cluster.s3().open_input_stream(f"{BUCKET}/runs/killed/{running[0]}/record.json").read())
    assert record["status"] == "ok"
    train = record["results"]["train"]
    assert train["final_step"] == 40
    assert train["resumed_from"] is not None and 0 < train["resumed_from"] < 40
    assert train["checkpoint"].startswith(f"s3://{BUCKET}/runs/killed/{running[0]}/tokenizer/checkpoints/")
