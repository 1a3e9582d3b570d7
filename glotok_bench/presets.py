"""Presets and grids by the names the README uses (``configs/cpu/glotok.toml``,
``grids/demo.toml``), found on disk first and else inside the installed package.

A wheel carries ``configs/`` and ``grids/`` as package data, so a cluster node that only
``pip install``-ed the package resolves the same names as a checkout does.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def find_preset(path: str | Path) -> Path:
    """``path`` if it exists here, else the packaged file of that name, else ``path``
    unchanged (so the caller reports it as missing, by the name the user gave)."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    packaged = resources.files("glotok_bench").joinpath(*path.parts)
    if packaged.is_file():
        return Path(str(packaged))
    return path
