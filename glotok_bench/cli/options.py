"""Options several commands share, and loading a run config from them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

OVERRIDE_HELP = "Dotted override, e.g. --set tokenizer.quantizer.semantic_size=4096 (repeatable)."


def config_options(function: Callable[..., Any]) -> Callable[..., Any]:
    function = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=OVERRIDE_HELP)(function)
    return function


def load_run_config(path: Path | None, overrides: tuple[str, ...]) -> Any:
    """The run config from PATH (or the defaults) with the overrides applied."""
    from glotok_bench.config import apply_overrides, load_config, structure
    from glotok_bench.runconfig import RunConfig

    if path is not None:
        return load_config(RunConfig, path, overrides)
    return structure(RunConfig, apply_overrides({}, overrides), source="--set overrides", overrides=overrides)


def data_overrides(data: str | None, split: str | None) -> tuple[str, ...]:
    """``--data demo`` or ``--data /path/to/imagenet`` as config overrides."""
    overrides: tuple[str, ...] = ()
    if data == "demo":
        overrides += ('data.dataset.name="demo"',)
    elif data is not None:
        overrides += ('data.dataset.name="imagefolder"', f"data.dataset.root={_quote(data)}")
    if split is not None:
        overrides += (f"data.eval_split={_quote(split)}",)
    return overrides


def _quote(value: str) -> str:
    import json

    return json.dumps(value)  # a JSON string is a valid TOML basic string
