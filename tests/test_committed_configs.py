"""Every committed config and grid loads, and every grid expands into valid cells.

A key renamed in code but not in ``configs/`` or ``grids/`` would otherwise surface only
when someone runs that file; grids are expanded (each cell's config built and checked)
without running anything.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from glotok_bench.config import load_config
from glotok_bench.grid.spec import expand, load_grid
from glotok_bench.runconfig import RunConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.toml")) + sorted((REPO / "tests" / "configs").rglob("*.toml"))
GRIDS = sorted((REPO / "grids").rglob("*.toml"))


def test_the_committed_files_are_found():
    assert len(CONFIGS) >= 10 and len(GRIDS) >= 8


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_config_loads(path):
    config = load_config(RunConfig, path)
    assert config.tokenizer.quantizer.config.codebook_label()


@pytest.mark.parametrize("path", GRIDS, ids=lambda p: str(p.relative_to(REPO)))
def test_grid_expands_into_distinct_cells(path, tmp_path):
    spec = load_grid(path)
    cells = expand(spec, RunConfig, tmp_path / "runs")
    axis_sizes = [len(values) for _, values in spec.axes]
    assert len(cells) == max(1, __import__("math").prod(axis_sizes))
    assert len({cell.cell_id for cell in cells}) == len(cells)


def test_the_grid_spec_docstring_example_is_a_valid_grid(tmp_path):
    import glotok_bench.grid.spec as spec_module

    example = re.search(r"\n((?:    .*\n|\n)+)", spec_module.__doc__).group(1)
    text = "\n".join(line[4:] for line in example.splitlines())
    base = (REPO / "configs" / "cpu" / "glotok.toml").as_posix()
    text = re.sub(r'^base = .*$', f'base = "{base}"', text, flags=re.M)
    (tmp_path / "example.toml").write_text(text)
    cells = expand(load_grid(tmp_path / "example.toml"), RunConfig, tmp_path / "runs")
    assert len(cells) == 4
    assert {cell.config["loss"]["semantic_weight"] for cell in cells} == {0.0, 0.01}


def test_every_grid_step_names_an_existing_pipeline_stage():
    from glotok_bench.grid.cells import STEP_TARGETS
    from glotok_bench.registry import Component

    for step, target in STEP_TARGETS.items():
        assert callable(Component(step, target).load()), target
    used = {step for path in GRIDS for step in load_grid(path).steps}
    assert used <= set(STEP_TARGETS)
