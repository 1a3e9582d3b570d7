"""``glotok-bench config``: validate a run config and print it fully resolved."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def config() -> None:
    """Run configs."""


@config.command("show")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Dotted override, e.g. --set tokenizer.quantizer.semantic_size=4096 (repeatable).")
def show(path: Path, overrides: tuple[str, ...]) -> None:
    """Print PATH resolved (extends, overrides and every default) as TOML."""
    from glotok_bench.config import dumps_toml, load_config
    from glotok_bench.runconfig import RunConfig

    click.echo(dumps_toml(load_config(RunConfig, path, overrides)), nl=False)
