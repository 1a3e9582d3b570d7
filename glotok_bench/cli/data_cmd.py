"""``glotok-bench data``: build and check the bundled demo dataset."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def data() -> None:
    """Datasets."""


@data.command("demo")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Where to build it (default: $GLOTOK_DATA_DIR or ~/.cache/glotok_bench/data).")
def demo(cache_dir: Path | None) -> None:
    """Build (or verify) the demo dataset and print where it is."""
    from glotok_bench.data.demo import ensure_demo_dataset

    root, manifest = ensure_demo_dataset(cache_dir / "glotok-demo-v1" if cache_dir else None)
    click.echo(f"{root}  ({len(manifest['files'])} files, sha256 {manifest['sha256'][:16]})")
