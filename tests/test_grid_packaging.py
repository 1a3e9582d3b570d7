"""Cluster nodes run the installed package: a wheel must carry every preset and grid, and
names like ``grids/demo.toml`` must resolve from any working directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from glotok_bench.grid.spec import load_grid

REPO = Path(__file__).resolve().parents[1]


def test_packaged_grids_resolve_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = load_grid("grids/demo.toml")
    assert spec.name == "demo" and spec.base.is_file() and spec.base.name == "glotok.toml"
    with pytest.raises(Exception, match="grid file not found: .*nope.toml"):
        load_grid("grids/nope.toml")


@pytest.mark.slow
def test_a_wheel_carries_the_presets_and_grids(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path)], check=True, capture_output=True, timeout=600, cwd=tmp_path)
    (wheel,) = tmp_path.glob("glotok_bench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("configs", "grids"):
        # grids may name data files beside them (e.g. a control teacher's codebook)
        files = [p for p in (REPO / folder).rglob("*") if p.suffix in (".toml", ".safetensors")]
        wanted = {f"glotok_bench/{p.relative_to(REPO).as_posix()}" for p in files}
        assert wanted and wanted <= names, sorted(wanted - names)
