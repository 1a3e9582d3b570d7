"""Data parallel under torchrun: 2 CPU ranks (gloo) match one process on the whole batch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from glotok_bench.train.metrics_log import read_log

SCRIPT = textwrap.dedent(
    """
    import sys, torch
    torch.set_num_threads(1)
    from torch import nn
    from glotok_bench.tokenizer import standalone_registry
    from glotok_bench.tokenizer.config import LossConfig
    from pathlib import Path
    import glotok_bench
    from glotok_bench.tokenizer.model import load_tokenizer_config
    from glotok_bench.train.config import TrainConfig
    from glotok_bench.train.trainer import train

    coarse = torch.rand(8, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    images = nn.functional.interpolate(coarse, size=16, mode="bilinear", align_corners=False)
    data = torch.utils.data.TensorDataset(images, torch.arange(8))
    # No BatchNorm discriminator and no LPIPS: the loss is then a plain mean over images,
    # so averaging two half-batch gradients equals the whole-batch gradient.
    result = train(
        load_tokenizer_config(Path(glotok_bench.__file__).resolve().parents[1] / "tests/configs/tiny-16.toml"),
        LossConfig(perceptual=False, adversarial_weight=0.0),
        TrainConfig(max_steps=4, batch_size=4, checkpoint_every=4, progress=False, lr=1e-3),
        data, run_dir=sys.argv[1], registry=standalone_registry(),
    )
    print("WORLD", result["world_size"], "IMAGES", result["images_per_s"] > 0)
    """
)


def run(command: list[str], tmp_path: Path, run_dir: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [*command, str(script), str(run_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )


def final_checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "ckpt-00000004.pt", weights_only=True)


@pytest.mark.slow
def test_two_ranks_match_one_process(tmp_path):
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    ddp = run(torchrun, tmp_path, tmp_path / "ddp")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("WORLD 2 IMAGES True") == 2  # both ranks finished
    single = run([sys.executable], tmp_path, tmp_path / "single")
    assert single.returncode == 0, single.stderr[-3000:]
    assert "WORLD 1" in single.stdout
    # Only rank 0 writes the log, and its losses are averaged over both ranks: the
    # whole-batch loss of the single process.
    ddp_log, single_log = (
        read_log(tmp_path / "ddp" / "metrics.jsonl"),
        read_log(tmp_path / "single" / "metrics.jsonl"),
    )
    assert [line["step"] for line in ddp_log] == [1, 2, 3, 4]
    for key in ("rec", "quant", "res", "total"):
        assert ddp_log[0][key] == pytest.approx(single_log[0][key], rel=1e-5), key
        assert [line[key] for line in ddp_log] == pytest.approx(
            [line[key] for line in single_log], rel=2e-2
        ), key
    # Weights agree closely overall. (Not elementwise: a conv bias right before a
    # one-channel-per-group GroupNorm has a pure rounding-noise gradient, which Adam
    # turns into a full-size step of either sign.)
    a, b = (
        final_checkpoint(tmp_path / "ddp")["model"],
        final_checkpoint(tmp_path / "single")["model"],
    )
    names = [n for n, t in a.items() if t.dtype.is_floating_point]
    flat_a = torch.cat([a[n].flatten() for n in names])
    flat_b = torch.cat([b[n].flatten() for n in names])
    assert (flat_a - flat_b).norm() / flat_b.norm() < 2e-3
