"""One grid cell chains tokenizer -> tokens -> generator -> gFID/IS, on a tiny config."""

from __future__ import annotations

from pathlib import Path

import pytest

from glotok_bench.grid.runner import run_grid

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_cell_chains_tokenizer_tokens_generator_and_gfid(tmp_path, demo_root):
    base = tmp_path / "tiny.toml"
    base.write_text(f'''
extends = "{REPO / "tests" / "configs" / "tiny-glotok.toml"}"
cache_dir = "{tmp_path / "cache"}"
[data]
train_split = "val"   # the 168 val crops: a small set to tokenize
[data.dataset]
cache_dir = "{demo_root}"
[train]
batch_size = 8
max_steps = 20
checkpoint_every = 20
[generator.generator]
name = "far-tiny"
[generator.train]
max_steps = 30
batch_size = 16
lr = 1e-3
checkpoint_every = 30
[generation]
per_class = 2
inception_score = false
[generation.fid]
extractor = "standin"
cache = false
''')
    grid = tmp_path / "grid.toml"
    grid.write_text(f'name = "chain"\nbase = "{base}"\nsteps = ["train", "tokenize", "gen-train", "gen-eval"]\n'
                    '[axes]\n"train.seed" = [0]\n')
    outcome = run_grid(grid, runs_root=tmp_path / "runs", executor="serial", echo=lambda _: None)
    record = outcome.records[0]
    assert record["status"] == "ok", record.get("error", {}).get("traceback")
    gfid = record["metrics"]["gfid@standin-randconv-v1"]
    assert gfid["value"] > 0
    protocol = gfid["protocol"]
    assert protocol["sampling"]["samples_per_class"] == 2 and protocol["split"] == "train"
    assert record["results"]["tokenize"]["count"] == 168
    generator = record["results"]["gen-train"]
    assert generator["final_step"] == 30 and generator["loss_last"] < generator["loss_first"]
    assert record["labels"]["generator"] == "far-tiny"
    samples = Path(record["results"]["gen-eval"]["samples"])
    import numpy as np

    assert np.load(samples)["arr_0"].shape == (14 * 2, 32, 32, 3)
