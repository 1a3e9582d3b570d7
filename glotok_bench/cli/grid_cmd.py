"""``glotok-bench run-grid``: the main job: a grid of train/evaluate cells, then leaderboards."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("run-grid")
@click.argument("grid", type=click.Path(dir_okay=False, path_type=Path))  # or a packaged grid's name
@click.option("--runs", "runs_root", default="runs", show_default=True,
              help="Where cell folders and run records go: a folder or a store URI (s3://bucket/runs, "
                   "gs://...; S3 endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).")
@click.option("--executor", type=click.Choice(["ray", "serial"]), default="ray", show_default=True,
              help="ray: cells as Ray Tune trials (local Ray, or --address); serial: in this process.")
@click.option("--address", default=None, envvar="RAY_ADDRESS",
              help="Join an existing Ray cluster (also $RAY_ADDRESS); default starts a local Ray.")
@click.option("--leaderboards", "leaderboard_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("leaderboards"), show_default=True, help="Regenerated from all records under --runs.")
@click.option("--no-leaderboard", is_flag=True, help="Do not regenerate the leaderboards afterwards.")
@click.pass_context
def run_grid_command(ctx: click.Context, grid: Path, runs_root: str, executor: str, address: str | None,
                     leaderboard_dir: Path, no_leaderboard: bool) -> None:
    """Run every cell of GRID (a TOML grid spec); finished cells are skipped."""
    from glotok_bench.grid.runner import run_grid

    outcome = run_grid(grid, runs_root=runs_root, executor=executor, address=address)
    failed = outcome.failed
    click.echo(f"{len(outcome.records) - len(failed)} cells ok, {len(failed)} failed; records under {runs_root}/")
    for record in failed:
        error = record.get("error", {})
        click.echo(f"  failed {record.get('run_id')}: {error.get('type')}: {error.get('message')}", err=True)
    if not no_leaderboard:
        from glotok_bench.leaderboard.cli import regenerate

        ctx.invoke(regenerate, records=(runs_root, "leaderboards/records"), out=leaderboard_dir)
    if failed:
        raise SystemExit(1)
