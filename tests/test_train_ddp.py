"""Data parallel under torchrun: 2 CPU ranks (gloo) against one process, and 2-rank resume.

One torchrun launch runs every 2-rank phase (starting processes is the slow part on
shared cores); a plain process runs the same script as the 1-rank reference.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from glotok_bench.train.metrics_log import read_log

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

SCRIPT = textwrap.dedent(
    """
    import sys, warnings
    import torch
    torch.set_num_threads(1)
    from torch import nn
    sys.path.insert(0, sys.argv[3])
    from glotok_bench.tokenizer import standalone_registry
    from glotok_bench.tokenizer.config import LossConfig
    from glotok_bench.tokenizer.model import load_tokenizer_config
    from glotok_bench.train.config import TrainConfig
    from glotok_bench.train.trainer import train
    from glotok_bench.generators.train import train_generator
    from test_generators_train import run_config

    out, tokens, mode = sys.argv[1], sys.argv[2], sys.argv[4]
    registry = standalone_registry()
    tiny = load_tokenizer_config(sys.argv[3] + "/configs/tiny-16.toml")
    coarse = torch.rand(8, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    images = nn.functional.interpolate(coarse, size=16, mode="bilinear", align_corners=False)
    data = torch.utils.data.TensorDataset(images, torch.arange(8))


    class Head(nn.Module):
        # A trained local-supervision head: its gradient must be all-reduced like the model's.
        def __init__(self):
            super().__init__()
            torch.manual_seed(5)
            self.proj = nn.Linear(4, 4)

        def loss(self, codebook, quantized, images):
            return (self.proj(quantized.mean(dim=(2, 3))) - 0.5).square().mean()

        def describe(self):
            return {"name": "head"}


    class Crash(Exception):
        pass


    def crash_at_3(step, _trainer):
        if step == 3:
            raise Crash


    def tokenizer(run_dir, steps=4, **extra):
        # No BatchNorm discriminator and no LPIPS: the loss is then a plain mean over
        # images, so averaging two half-batch gradients equals the whole-batch gradient.
        head = Head()
        result = train(
            tiny, LossConfig(perceptual=False, adversarial_weight=0.0, semantic_weight=1.0),
            TrainConfig(max_steps=steps, batch_size=4, checkpoint_every=2, progress=False, lr=1e-3),
            data, run_dir=f"{out}/{run_dir}", registry=registry, supervision=head, **extra,
        )
        return head, result


    head, result = tokenizer("tok")
    rank = int(__import__("os").environ.get("RANK", "0"))
    torch.save(head.state_dict(), f"{out}/head-rank{rank}.pt")
    # One file per rank: ranks printing to the one shared stdout interleave their writes.
    with open(f"{out}/rank{rank}.txt", "w") as report:
        report.write(f"WORLD {result.world_size} CHECKPOINT {result.checkpoint}")
    if mode == "ddp":
        try:
            tokenizer("tok-resumed", on_step_end=crash_at_3)
        except Crash:
            pass
        tokenizer("tok-resumed")
        for run_dir in ("gen", "gen-resumed"):
            try:
                train_generator(run_config("far-tiny", steps=4, every=2, ema=True, dropout=0.1),
                                tokens, f"{out}/{run_dir}", registry=registry,
                                on_step_end=crash_at_3 if run_dir == "gen-resumed" else None)
            except Crash:
                train_generator(run_config("far-tiny", steps=4, every=2, ema=True, dropout=0.1),
                                tokens, f"{out}/{run_dir}", registry=registry)
    else:
        # A 2-rank generator checkpoint resumed by one process: re-seeded, not a crash.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            again = train_generator(run_config("far-tiny", steps=6, every=2, ema=True, dropout=0.1),
                                    tokens, f"{out}/gen", registry=registry)
        with open(f"{out}/reseeded.txt", "w") as report:
            report.write(f"{any('re-seeded' in str(w.message) for w in caught)} {again.final_step}")
    """
)

# Errors that mean another process took the port the launcher picked (it frees a port,
# then binds it: on a busy machine running many tests another process can get there first).
PORT_TAKEN = ("address already in use", "EADDRINUSE", "errno 98")


def launch(command: list[str], tmp_path: Path, out: Path, tokens: Path, mode: str) -> subprocess.CompletedProcess:
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }
    for _attempt in range(3):
        # Generous: two ranks importing torch on two cores shared with other test runs.
        proc = subprocess.run(
            [*command, str(script), str(out), str(tokens), str(TESTS), mode],
            capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path,
        )  # fmt: skip
        if proc.returncode == 0 or not any(s in proc.stderr for s in PORT_TAKEN):
            return proc
    return proc


def flat(state: dict) -> torch.Tensor:
    return torch.cat([t.flatten().double() for t in state.values() if t.dtype.is_floating_point])


def assert_identical(a, b, where: str = "") -> None:
    """Bit-identical nested checkpoint content (tensors, lists, dicts, plain values)."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.slow
def test_two_ranks_match_one_process_and_resume_exactly(tmp_path):
    from test_generators_tokens import write_fake_tokens

    tokens = write_fake_tokens(tmp_path / "tokens")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    ddp = launch(torchrun, tmp_path, tmp_path / "ddp", tokens, "ddp")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    # Every rank returns the checkpoint rank 0 wrote (after a barrier, so it exists).
    ckpt = str(tmp_path / "ddp" / "tok" / "checkpoints" / "ckpt-00000004.pt")
    for rank in (0, 1):
        assert (tmp_path / "ddp" / f"rank{rank}.txt").read_text() == f"WORLD 2 CHECKPOINT {ckpt}"
    # The 1-process run also resumes (a copy of) the 2-rank generator run.
    shutil.copytree(tmp_path / "ddp" / "gen", tmp_path / "single" / "gen")
    single = launch([sys.executable], tmp_path, tmp_path / "single", tokens, "single")
    assert single.returncode == 0, single.stderr[-3000:]
    assert (tmp_path / "single" / "rank0.txt").read_text().startswith("WORLD 1 ")
    assert (tmp_path / "single" / "reseeded.txt").read_text() == "True 6"

    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    # Rank 0 alone writes the log, with losses averaged over both ranks: the whole-batch loss.
    ddp_log, single_log = read_log(ddp_dir / "tok" / "metrics.jsonl"), read_log(single_dir / "tok" / "metrics.jsonl")
    assert [line["step"] for line in ddp_log] == [1, 2, 3, 4]
    for key in ("rec", "quant", "res", "semantic", "total"):
        assert ddp_log[0][key] == pytest.approx(single_log[0][key], rel=1e-5), key
    # The supervision head is trained inside DDP: identical on both ranks, and what one
    # process training on the whole batch reaches.
    heads = [torch.load(ddp_dir / f"head-rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert_identical(heads[0], heads[1], "head")
    one = torch.load(single_dir / "head-rank0.pt", weights_only=True)
    assert (flat(heads[0]) - flat(one)).norm() / flat(one).norm() < 2e-3
    # Weights agree closely overall. (Not elementwise: a conv bias right before a
    # one-channel-per-group GroupNorm has a pure rounding-noise gradient, which Adam
    # turns into a full-size step of either sign.)
    a = torch.load(ddp_dir / "tok" / "checkpoints" / "ckpt-00000004.pt", weights_only=True)
    b = torch.load(single_dir / "tok" / "checkpoints" / "ckpt-00000004.pt", weights_only=True)
    model_a = {k: v for k, v in a["model"].items() if not k.endswith("hits")}
    model_b = {k: v for k, v in b["model"].items() if not k.endswith("hits")}
    assert (flat(model_a) - flat(model_b)).norm() / flat(model_b).norm() < 2e-3
    # Codebook hits count every rank's codes: as many as the one process counted.
    hits = [k for k in a["model"] if k.endswith("hits")]
    assert hits and all(int(a["model"][k].sum()) == int(b["model"][k].sum()) > 0 for k in hits)
    # Each rank's RNG state is saved (one per rank).
    assert len(a["training"]["rng"]) == 2 and len(b["training"]["rng"]) == 1

    # A 2-rank run killed at step 3 and resumed from its step-2 checkpoint ends with the
    # files of the uninterrupted 2-rank run, bit for bit (tokenizer and generator).
    for straight, resumed in (("tok", "tok-resumed"), ("gen", "gen-resumed")):
        x = torch.load(ddp_dir / straight / "checkpoints" / "ckpt-00000004.pt", weights_only=True)
        y = torch.load(ddp_dir / resumed / "checkpoints" / "ckpt-00000004.pt", weights_only=True)
        for key in ("model", "ema", "step", "training"):
            assert_identical(x[key], y[key], f"{straight}.{key}")
        assert read_log(ddp_dir / straight / "metrics.jsonl") != []
        strip = [{k: v for k, v in line.items() if k != "wall_s"} for line in read_log(ddp_dir / resumed / "metrics.jsonl")]
        assert strip == [{k: v for k, v in line.items() if k != "wall_s"} for line in read_log(ddp_dir / straight / "metrics.jsonl")]
    # Generator ranks draw their own dropout and noise (seed + rank): two different states.
    gen = torch.load(ddp_dir / "gen" / "checkpoints" / "ckpt-00000004.pt", weights_only=True)
    states = gen["training"]["rng"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])
