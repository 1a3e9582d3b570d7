"""A cell with 2 workers trains data-parallel through Ray Train (gloo on CPU) and matches
the same cell trained in one process, as the torchrun test does for hand-started runs."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import attrs
import pytest
import torch

from glotok_bench.grid.runner import run_grid
from glotok_bench.train.metrics_log import read_log

pytestmark = pytest.mark.slow


@attrs.frozen(kw_only=True)
class DataParallelRun:
    name: str = "dp"
    seed: int = 0


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
        load_tokenizer_config(Path(__file__).resolve().parent / "configs" / "tiny-16.toml"), LossConfig(perceptual=False, adversarial_weight=0.0),
        TrainConfig(max_steps=4, batch_size=4, checkpoint_every=4, progress=False, lr=1e-3),
        torch.utils.data.TensorDataset(images, torch.arange(8)),
        run_dir=context.run_dir / "tokenizer", registry=standalone_registry(),
    )
    return {"results": result.as_record()}


STEPS = {"train": tiny_train_step}


@pytest.fixture()
def local_ray(monkeypatch):
    import ray

    folder = Path(tempfile.mkdtemp(prefix="gtp-", dir="/tmp"))  # our own Ray temp folder
    monkeypatch.setenv("RAY_TMPDIR", str(folder))
    # Workers import this module's step by name.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parent),
                                       "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()
    shutil.rmtree(folder, ignore_errors=True)


def _grid(tmp_path: Path, workers: int) -> Path:
    (tmp_path / "base.toml").write_text('name = "dp"\n')
    grid = tmp_path / f"grid-{workers}.toml"
    grid.write_text(f'name = "dp"\nbase = "base.toml"\nsteps = ["train"]\n'
                    f'[resources]\ncpus = 0.5\nworkers = {workers}\n[axes]\nseed = [0]\n')
    return grid


def test_two_worker_cell_matches_the_one_process_cell(tmp_path, local_ray):
    # The 2-worker cell as a Tune trial that launches Ray Train (what run-grid does).
    outcomes = {
        workers: run_grid(_grid(tmp_path, workers), runs_root=tmp_path / f"runs-{workers}", executor=executor,
                          config_class=DataParallelRun, steps=STEPS, echo=lambda _: None)
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
    names = [n for n, t in a.items() if t.dtype.is_floating_point]
    flat_a, flat_b = (torch.cat([m[n].flatten() for n in names]) for m in (a, b))
    assert (flat_a - flat_b).norm() / flat_b.norm() < 2e-3
