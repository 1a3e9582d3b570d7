"""``glotok-bench leaderboard``: rebuild leaderboards/ from the run records."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("leaderboard")
def leaderboard() -> None:
    """Leaderboards built from run records and the paper's published numbers."""


@leaderboard.command("regenerate")
@click.option(
    "--records", multiple=True, default=("runs", "leaderboards/records"), show_default=True,
    help="Folder or store URI (s3://bucket/runs) searched for record.json files (repeatable; "
         "missing ones are skipped).",
)
@click.option(
    "--out", default="leaderboards", show_default=True,
    type=click.Path(file_okay=False, path_type=Path), help="Folder the CSV, markdown and PNG files go to.",
)
@click.option("--force", is_flag=True, help="Write even when no record is found but OUT holds measured rows.")
@click.option(
    "--benchmarks", default="benchmarks/results", show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Benchmark results folder; its supervision_ab.csv gives claims.csv's B.2 rows (skipped if absent).",
)
def regenerate(records: tuple[str, ...], out: Path, force: bool, benchmarks: Path) -> None:
    """Rebuild every CSV, README.md and plot in OUT from the records under RECORDS.

    Corrupt records are reported by path and skipped; failed and unfinished runs are counted
    but give no rows. OUT's measured rows are not wiped by a run that finds no record at all
    (a mistyped --records) unless --force.
    """
    from glotok_bench.leaderboard.build import regenerate as build
    from glotok_bench.leaderboard.collect import collect

    measured = _measured_rows(out)
    if measured and not force and collect(records).used == 0:
        from glotok_bench.errors import GlotokError

        raise GlotokError(
            f"refusing to rewrite {out}: it holds {measured} measured rows but {', '.join(records)} "
            f"hold no usable run record; check --records, or pass --force to keep only the paper's rows"
        )
    outcome = build(records, out, benchmarks)
    c = outcome.collection
    for path, message in c.corrupt:
        click.secho(f"skipped corrupt record {path}: {message}", fg="yellow", err=True)
    for path in c.duplicates:
        click.secho(f"skipped duplicate record {path} (same kind and run id as an earlier one)", fg="yellow", err=True)
    click.echo(
        f"{c.found} records: {c.used} used, {len(c.failed)} failed, {len(c.running)} not finished, "
        f"{len(c.corrupt)} corrupt, {len(c.duplicates)} duplicates"
    )
    for name, table in outcome.tables.items():
        counts = table["source"].value_counts()
        click.echo(f"  {name}.csv: {counts.get('measured', 0)} measured rows, {counts.get('paper', 0)} paper rows")
    click.echo(f"wrote {len(outcome.written)} files to {out}")


def _measured_rows(out: Path) -> int:
    import csv

    count = 0
    for table in sorted(out.glob("*.csv")) if out.is_dir() else ():
        with open(table, newline="", encoding="utf-8") as handle:
            count += sum(1 for row in csv.DictReader(handle) if row.get("source") == "measured")
    return count
