"""Grid specs (TOML) and their expansion into content-addressed cells.

    name = "demo"
    base = "../configs/tokenizer/glotok-cpu32.toml"   # relative to this file
    steps = ["train", "eval"]
    [resources]          # per cell
    cpus = 1
    gpus = 0
    max_retries = 1
    [axes]               # any config path -> the values it takes
    "loss.histogram_weight" = [0.0, 0.01]
    "tokenizer.residual.name" = ["none", "transformer"]

A cell's id is a hash of its fully resolved config, so the same experiment always lands in
the same folder, whichever grid asked for it, and editing an axis never reuses old results.
"""

from __future__ import annotations

import copy
import itertools
import json
import tomllib
from pathlib import Path
from typing import Any

import attrs

from glotok_bench.config import (
    config_digest,
    read_toml_with_extends,
    set_path,
    structure,
    to_dict,
)
from glotok_bench.errors import ConfigError

GRID_KEYS = {"name", "base", "steps", "resources", "axes", "set", "description"}
RESOURCE_KEYS = {"cpus", "gpus", "max_retries"}


@attrs.frozen
class GridSpec:
    name: str
    source: Path
    base: Path
    steps: tuple[str, ...]
    axes: tuple[tuple[str, tuple[Any, ...]], ...]
    fixed: tuple[tuple[str, Any], ...] = ()  # (config path, value) applied to every cell
    cpus: float = 1.0
    gpus: float = 0.0
    max_retries: int = 0
    description: str = ""


@attrs.frozen
class Cell:
    """One point of the grid. Holds plain data only, so it pickles to Ray workers."""

    grid: str
    cell_id: str
    base: Path
    overrides: tuple[str, ...]  # "path=value" (JSON values), for records and humans
    labels: dict[str, Any]
    steps: tuple[str, ...]
    run_dir: Path
    config: dict[str, Any]  # the resolved config as plain data


def load_grid(path: str | Path) -> GridSpec:
    path = Path(path).resolve()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"grid file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    problems = [f"{key}: unknown key (valid: {', '.join(sorted(GRID_KEYS))})" for key in data if key not in GRID_KEYS]
    resources = data.get("resources", {})
    problems += [f"resources.{key}: unknown key" for key in resources if key not in RESOURCE_KEYS]
    for key in ("name", "base"):
        if not isinstance(data.get(key), str):
            problems.append(f"{key}: required string")
    steps = data.get("steps", ["train", "eval"])
    if not (isinstance(steps, list) and steps and all(isinstance(s, str) for s in steps)):
        problems.append("steps: expected a non-empty list of step names")
    axes = data.get("axes", {})
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            problems.append(f"axes.{key}: expected a non-empty list of values")
    fixed = data.get("set", {})
    if problems:
        raise ConfigError(f"invalid grid {path}:\n" + "\n".join(f"  {p}" for p in problems))
    base = (path.parent / data["base"]).resolve()
    return GridSpec(
        name=data["name"],
        source=path,
        base=base,
        steps=tuple(steps),
        axes=tuple((key, tuple(values)) for key, values in axes.items()),
        fixed=tuple(fixed.items()),
        cpus=float(resources.get("cpus", 1)),
        gpus=float(resources.get("gpus", 0)),
        max_retries=int(resources.get("max_retries", 0)),
        description=data.get("description", ""),
    )


def expand(spec: GridSpec, config_class: type, runs_root: Path) -> list[Cell]:
    """All cells, validated up front: a typo in an axis fails before anything trains."""
    base_data = read_toml_with_extends(spec.base)
    keys = [key for key, _ in spec.axes]
    cells = []
    for values in itertools.product(*(values for _, values in spec.axes)):
        settings = spec.fixed + tuple(zip(keys, values, strict=True))
        data = copy.deepcopy(base_data)
        for path, value in settings:
            set_path(data, path.split("."), value, what=f"{spec.source}: {path}")
        overrides = tuple(f"{path}={json.dumps(value)}" for path, value in settings)
        config = structure(config_class, data, source=f"{spec.source} (cell {dict(zip(keys, values, strict=True))})")
        plain = to_dict(config)
        cell_id = config_digest(config)
        cells.append(
            Cell(
                grid=spec.name,
                cell_id=cell_id,
                base=spec.base,
                overrides=overrides,
                labels={"grid": spec.name, "cell": cell_id, **dict(zip(keys, values, strict=True))},
                steps=spec.steps,
                run_dir=(runs_root / spec.name / cell_id).resolve(),
                config=plain,
            )
        )
    ids = [c.cell_id for c in cells]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{spec.source}: two cells resolve to the same config; remove the duplicate axis value")
    return cells
