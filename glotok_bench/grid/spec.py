"""Grid specs (TOML) and their expansion into content-addressed cells.

    name = "demo"
    base = "../configs/cpu/glotok.toml"   # relative to this file
    steps = ["train", "eval"]
    [set]                # any config path -> one value, for every cell
    "train.max_steps" = 200
    [resources]          # per cell
    cpus = 1             # per worker
    gpus = 0             # per worker
    workers = 1          # > 1: data-parallel training over that many Ray Train workers
    max_retries = 1
    [runtime_env]        # optional: passed to ray.init (pip = ["my-plugin==1.0"], env_vars...)
    [axes]               # any config path -> the values it takes
    "loss.semantic_weight" = [0.0, 0.01]
    "tokenizer.residual_head.name" = ["none", "transformer"]

``seeds = N`` (top level) runs every variant with ``train.seed`` = 0 .. N-1 (or the listed
seeds, ``seeds = [3, 7]``): it is the last axis, so a variant's seeds are neighbouring
cells, and leaderboards average over it (mean, std, n, 95% interval). Writing
``"train.seed"`` under ``[axes]`` does the same; giving both is an error.

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

GRID_KEYS = {"name", "base", "steps", "resources", "axes", "set", "description", "seeds", "runtime_env"}
SEED_PATH = "train.seed"
RESOURCE_KEYS = {"cpus", "gpus", "workers", "max_retries"}


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
    workers: int = 1
    runtime_env: dict[str, Any] = attrs.field(factory=dict)  # for ray.init: what workers need


@attrs.frozen
class Cell:
    """One point of the grid. Holds plain data only, so it pickles to Ray workers."""

    grid: str
    cell_id: str
    base: Path
    overrides: tuple[str, ...]  # "path=value" (JSON values), for records and humans
    labels: dict[str, Any]
    steps: tuple[str, ...]
    location: str  # the cell's folder in the store: an absolute path or a URI (s3://...)
    config: dict[str, Any]  # the resolved config as plain data
    workers: int = 1  # data-parallel training processes (Ray Train workers)
    cpus: float = 1.0  # per worker
    gpus: float = 0.0  # per worker

    @property
    def run_dir(self) -> Path:
        """The cell's folder when the store is a local (or mounted) folder."""
        if "://" in self.location:
            raise ValueError(f"cell {self.cell_id} lives in an object store ({self.location}), not on disk")
        return Path(self.location)


def load_grid(path: str | Path) -> GridSpec:
    from glotok_bench.presets import find_preset

    path = find_preset(path).resolve()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"grid file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    problems = [f"{key}: unknown key (valid: {', '.join(sorted(GRID_KEYS))})" for key in data if key not in GRID_KEYS]
    resources = data.get("resources", {})
    problems += [f"resources.{key}: unknown key" for key in resources if key not in RESOURCE_KEYS]
    workers = resources.get("workers", 1)
    if not (isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1):
        problems.append(f"resources.workers: expected an integer >= 1, got {workers!r}")
    if not isinstance(data.get("runtime_env", {}), dict):
        problems.append("runtime_env: expected a table (e.g. pip = [\"my-plugin\"])")
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
    seeds = _seeds(data.get("seeds"), axes, fixed, problems)
    if problems:
        raise ConfigError(f"invalid grid {path}:\n" + "\n".join(f"  {p}" for p in problems))
    base = (path.parent / data["base"]).resolve()
    return GridSpec(
        name=data["name"],
        source=path,
        base=base,
        steps=tuple(steps),
        axes=tuple((key, tuple(values)) for key, values in axes.items()) + ((SEED_PATH, seeds),) * bool(seeds),
        fixed=tuple(fixed.items()),
        cpus=float(resources.get("cpus", 1)),
        gpus=float(resources.get("gpus", 0)),
        max_retries=int(resources.get("max_retries", 0)),
        description=data.get("description", ""),
        workers=int(resources.get("workers", 1)),
        runtime_env=dict(data.get("runtime_env", {})),
    )


def _seeds(raw: Any, axes: dict[str, Any], fixed: dict[str, Any], problems: list[str]) -> tuple[int, ...]:
    """``seeds = N`` -> (0, ..., N-1); ``seeds = [a, b]`` -> (a, b); absent -> ()."""
    if raw is None:
        return ()
    if SEED_PATH in axes or SEED_PATH in fixed:
        problems.append(f"seeds: {SEED_PATH!r} is also set under [axes] or [set]; give the seeds once")
        return ()
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
        return tuple(range(raw))
    if (isinstance(raw, list) and raw and all(isinstance(s, int) and not isinstance(s, bool) for s in raw)
            and len(set(raw)) == len(raw)):
        return tuple(raw)
    problems.append(f"seeds: expected a positive integer or a list of distinct integers, got {raw!r}")
    return ()


def expand(spec: GridSpec, config_class: type, runs_root: str | Path) -> list[Cell]:
    """All cells, validated up front: a typo in an axis fails before anything trains.

    ``runs_root``: a local folder or a store URI (see :mod:`glotok_bench.store`)."""
    from glotok_bench.store import open_store

    grid_store = open_store(runs_root).child(spec.name)
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
                location=grid_store.child(cell_id).location,
                config=plain,
                workers=spec.workers,
                cpus=spec.cpus,
                gpus=spec.gpus,
            )
        )
    ids = [c.cell_id for c in cells]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{spec.source}: two cells resolve to the same config; remove the duplicate axis value")
    return cells
