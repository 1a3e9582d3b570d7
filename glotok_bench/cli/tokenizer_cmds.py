"""Tokenizer jobs: ``train``, ``eval``, ``reconstruct`` and ``tokenize``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from glotok_bench.cli.options import config_options, data_overrides, load_run_config

_CONFIG = click.Path(exists=True, dir_okay=False, path_type=Path)
_DIR = click.Path(file_okay=False, path_type=Path)


@click.command("train")
@click.argument("config_path", metavar="CONFIG", type=_CONFIG)
@config_options
@click.option("--run-dir", type=_DIR, default=None, help="Default: runs/<config name>.")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from the run folder's last checkpoint.")
def train_command(config_path: Path, overrides: tuple[str, ...], run_dir: Path | None, resume: bool) -> None:
    """Train a tokenizer from CONFIG; writes checkpoints, metrics.jsonl and record.json."""
    from glotok_bench.pipeline import TOKENIZER_DIR, train_tokenizer
    from glotok_bench.records import record_job

    config = load_run_config(config_path, overrides)
    run_dir = run_dir or Path("runs") / config.name
    record = record_job("train", run_dir, config,
                        lambda: train_tokenizer(config, run_dir / TOKENIZER_DIR, resume=resume), resumes=resume)
    results = record["results"]["train"]
    click.echo(f"trained to step {results.get('final_step')}: {results.get('checkpoint')}")


def _config_and_tokenizer(checkpoint: Path, config_path: Path | None, overrides: tuple[str, ...],
                          weights: str = "ema") -> tuple[Any, tuple[Any, dict[str, Any]]]:
    """The run config with its tokenizer section taken from CHECKPOINT (ours, or a peer's
    shapes), and the checkpoint as ``load_tokenizer`` returned it: one read of the file
    serves both (a peer's is 0.3-1 GB); the job moves the weights to its device."""
    import attrs

    from glotok_bench.tokenizer.checkpoint import load_tokenizer

    config = load_run_config(config_path, overrides)
    loaded = load_tokenizer(checkpoint, weights=weights)
    return attrs.evolve(config, tokenizer=loaded[0].config), loaded


@click.command("eval")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data", default=None, help="'demo', or an ImageNet-layout root (ROOT/<split>/<class>/<image>).")
@click.option("--split", default=None, help="Split to evaluate (default: the config's data.eval_split, 'val').")
@click.option("--config", "config_path", type=_CONFIG, default=None,
              help="Run config for data and metric settings (default: built-in defaults).")
@config_options
@click.option("--weights", type=click.Choice(["ema", "model"]), default="ema", show_default=True)
@click.option("--out", type=_DIR, default=None, help="Default: <checkpoint folder>/../eval.")
def eval_command(checkpoint: Path, data: str | None, split: str | None, config_path: Path | None,
                 overrides: tuple[str, ...], weights: str, out: Path | None) -> None:
    """Evaluate a tokenizer CHECKPOINT: rFID, IS, PSNR, SSIM, LPIPS, usage, uniformity, Fig. 4."""
    from glotok_bench.pipeline import evaluate_tokenizer_checkpoint
    from glotok_bench.records import record_job

    config, loaded = _config_and_tokenizer(checkpoint, config_path, data_overrides(data, split) + overrides, weights)
    out = out or checkpoint.resolve().parent.parent / "eval"
    record = record_job("eval", out, config, lambda: evaluate_tokenizer_checkpoint(
        config, checkpoint, out, weights=weights, loaded=loaded))
    for name, metric in sorted(record["metrics"].items()):
        value = metric.get("value")
        if isinstance(value, int | float):
            click.echo(f"  {name:<40} {value:.4f}")
    unreadable = record["results"]["eval"].get("unreadable_images") or {}
    if unreadable.get("count"):
        click.secho(f"skipped {unreadable['count']} unreadable image(s), e.g. {unreadable['files'][0]} "
                    f"(all listed in the record)", fg="yellow", err=True)
    click.echo(f"record: {out / 'record.json'}")


@click.command("reconstruct")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("reconstructions.png"),
              show_default=True)
@click.option("--weights", type=click.Choice(["ema", "model"]), default="ema", show_default=True)
def reconstruct_command(checkpoint: Path, images: tuple[Path, ...], out: Path, weights: str) -> None:
    """Write a PNG grid of (original, reconstruction) pairs for IMAGES (files or folders)."""
    from glotok_bench.device import pick_device
    from glotok_bench.tokenizer.reconstruct import reconstruct_images

    result = reconstruct_images(checkpoint, list(images), out, weights=weights, device=str(pick_device()))
    click.echo(f"wrote {out}; mean PSNR {sum(result['psnr']) / len(result['psnr']):.2f} dB"
               if result.get("psnr") else f"wrote {out}")


@click.command("tokenize")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data", default=None, help="'demo', or an ImageNet-layout root.")
@click.option("--config", "config_path", type=_CONFIG, default=None)
@config_options
@click.option("--out", type=_DIR, required=True, help="Token folder (manifest.json + shards).")
def tokenize_command(checkpoint: Path, data: str | None, config_path: Path | None,
                     overrides: tuple[str, ...], out: Path) -> None:
    """Encode the training split into indices and quantized features, for generators."""
    from glotok_bench.pipeline import tokenize
    from glotok_bench.runlock import hold_run_folder

    config, loaded = _config_and_tokenizer(checkpoint, config_path, data_overrides(data, None) + overrides)
    # Beside the folder: a complete token set replaces the folder whole. Its manifest is its record.
    with hold_run_folder(out, job="tokenize", beside=True):
        result = tokenize(config, checkpoint, out, loaded=loaded)
    skipped = result["results"].get("skipped") or 0
    click.echo(f"{result['results']['count']} images tokenized into {out}"
               + (f"; {skipped} unreadable image(s) skipped (listed in manifest.json)" if skipped else ""))
