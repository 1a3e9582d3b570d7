"""Generator jobs: ``gen-train`` and ``generate`` (with gFID/IS when asked)."""

from __future__ import annotations

from pathlib import Path

import click

from glotok_bench.cli.options import config_options, load_run_config

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command("gen-train")
@click.argument("config_path", metavar="CONFIG", type=_FILE)
@config_options
@click.option("--tokens", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Token folder written by `glotok-bench tokenize`.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Default: runs/<config name>/generator.")
@click.option("--resume/--no-resume", default=True, show_default=True)
def gen_train_command(config_path: Path, overrides: tuple[str, ...], tokens: Path, run_dir: Path | None,
                      resume: bool) -> None:
    """Train the generator of CONFIG ([generator] section) on a token folder."""
    from glotok_bench.pipeline import train_generator_stage
    from glotok_bench.records import record_job

    config = load_run_config(config_path, overrides)
    run_dir = run_dir or Path("runs") / config.name / "generator"
    record = record_job("gen-train", run_dir, config,
                        lambda: train_generator_stage(config, tokens, run_dir, resume=resume), resumes=resume)
    results = record["results"]["gen-train"]
    click.echo(f"loss {results.get('loss_first')} -> {results.get('loss_last')}; {results.get('checkpoint')}")


@click.command("generate")
@click.argument("checkpoint", type=_FILE)
@click.option("--tokenizer", "tokenizer_checkpoint", type=_FILE, required=True,
              help="The tokenizer checkpoint whose tokens the generator learned.")
@click.option("--config", "config_path", type=_FILE, default=None,
              help="Run config: its [generation] section sets sampling and the gFID reference.")
@config_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("samples"),
              show_default=True)
def generate_command(checkpoint: Path, tokenizer_checkpoint: Path, config_path: Path | None,
                     overrides: tuple[str, ...], out: Path) -> None:
    """Sample per_class images per class (PNG grid + ADM .npz) and measure gFID/IS."""
    from glotok_bench.pipeline import evaluate_generator
    from glotok_bench.records import record_job

    config = load_run_config(config_path, overrides)
    record = record_job("gen-eval", out, config,
                        lambda: evaluate_generator(config, checkpoint, tokenizer_checkpoint, out))
    for name, metric in sorted(record["metrics"].items()):
        click.echo(f"  {name:<32} {metric.get('value')}")
    results = record["results"]["gen-eval"]
    sampling = results.get("sampling") or {}
    if sampling:  # the generator preset's defaults fill what the config leaves unset
        click.echo(f"guidance {sampling.get('cfg_scale')} ({sampling.get('cfg_schedule')}), "
                   f"temperature {sampling.get('temperature')}, seed {sampling.get('seed')}")
    click.echo(f"samples: {results.get('samples')}")
