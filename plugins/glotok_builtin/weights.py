"""Built-in weight lookup: an explicit per-name env var, then the weights directory."""

from __future__ import annotations

import os
from pathlib import Path

from glotok_bench.errors import MissingWeightsError
from glotok_bench.hookspecs import hookimpl
from glotok_bench.weights import env_var_for, expected_filename, weights_dir


@hookimpl(trylast=True)
def glotok_resolve_weights(name: str) -> Path | None:
    variable = env_var_for(name)
    override = os.environ.get(variable)
    if override:
        # A variable that is set but wrong is a mistake worth stopping for, not a fallback.
        if not Path(override).is_file():
            raise MissingWeightsError(f"{name}: ${variable} is set to {override}, which is not a file")
        return Path(override)
    candidate = weights_dir() / expected_filename(name)
    return candidate if candidate.is_file() else None
