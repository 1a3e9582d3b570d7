"""The ``glotok-bench`` command line.

Subcommands are imported only when invoked (``_LAZY_COMMANDS``), so ``--help`` and
``plugins list`` start without torch. Plugins add their own commands through the
``glotok_cli_commands`` hook.
"""

from __future__ import annotations

import importlib
import sys

import click

from glotok_bench import __version__
from glotok_bench.errors import GlotokError

# command name -> "module:click object"
_LAZY_COMMANDS = {
    "plugins": "glotok_bench.cli.plugins_cmd:plugins",
    "config": "glotok_bench.cli.config_cmd:config",
    "data": "glotok_bench.cli.data_cmd:data",
    "run-grid": "glotok_bench.cli.grid_cmd:run_grid_command",
    "train": "glotok_bench.cli.tokenizer_cmds:train_command",
    "eval": "glotok_bench.cli.tokenizer_cmds:eval_command",
    "reconstruct": "glotok_bench.cli.tokenizer_cmds:reconstruct_command",
    "tokenize": "glotok_bench.cli.tokenizer_cmds:tokenize_command",
    "teacher": "glotok_bench.cli.teacher_cmd:teacher",
    "gen-train": "glotok_bench.cli.generator_cmds:gen_train_command",
    "generate": "glotok_bench.cli.generator_cmds:generate_command",
    "leaderboard": "glotok_bench.leaderboard.cli:leaderboard",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in _LAZY_COMMANDS:
            module_name, attribute = _LAZY_COMMANDS[name].split(":")
            return getattr(importlib.import_module(module_name), attribute)
        return super().get_command(ctx, name)


# Commands that diagnose the installation: they run even when plugins conflict.
DIAGNOSTIC_COMMANDS = {"plugins"}


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="glotok-bench")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Train, evaluate and compare GloTok and peer image tokenizers."""
    if ctx.invoked_subcommand not in DIAGNOSTIC_COMMANDS:
        from glotok_bench.registry import get_registry

        get_registry().check_no_conflicts()


def _add_plugin_commands() -> None:
    from glotok_bench.registry import get_registry

    get_registry().hook().glotok_cli_commands(cli=cli)


def main(argv: list[str] | None = None) -> None:
    """Entry point: harness errors print as one line and exit 2; bugs keep their traceback."""
    try:
        _add_plugin_commands()
        cli.main(args=argv, prog_name="glotok-bench", standalone_mode=False)
    except GlotokError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
