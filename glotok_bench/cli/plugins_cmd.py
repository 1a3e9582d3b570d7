"""``glotok-bench plugins``: what is registered, by kind, and from which package."""

from __future__ import annotations

import click


@click.group()
def plugins() -> None:
    """Inspect registered plugins and components."""


@plugins.command("list")
def list_plugins() -> None:
    """Every registered component by kind, with its plugin and source package."""
    from glotok_bench.registry import get_registry

    registry = get_registry()
    for kind in registry.kinds():
        click.secho(f"{kind}:", bold=True)
        entries = registry.entries(kind)
        if not entries:
            click.echo("  (none)")
        conflicting = {c.name for c in registry.conflicts if c.kind == kind}
        for entry in entries:
            click.echo(
                f"  {entry.component.name:<22} {entry.component.summary}  "
                f"[{entry.plugin} from {entry.distribution}]"
                + ("  CONFLICT: registered again, unusable" if entry.component.name in conflicting else "")
            )
    for conflict in registry.conflicts:
        click.secho(f"name conflict: {conflict.describe()}", fg="red", err=True)
    for failure in registry.failures:
        click.secho(
            f"failed plugin: {failure.plugin} from {failure.distribution}: {failure.error}",
            fg="red",
            err=True,
        )
