"""``glotok-bench teacher``: build a teacher codebook once, and compare it with students."""

from __future__ import annotations

from pathlib import Path

import click

from glotok_bench.cli.options import config_options, load_run_config


@click.group()
def teacher() -> None:
    """Teacher codebooks for histogram relation learning."""


@teacher.command("build")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Run config whose [teacher] section to build (default: built-in).")
@config_options
def build(config_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Build (or find in the cache) the teacher of a run config, e.g.

    glotok-bench teacher build --set teacher.name=patch-kmeans --set teacher.data_root=DIR
    """
    import torch

    from glotok_bench.device import pick_device
    from glotok_bench.pipeline import build_dataset, build_teacher_file

    config = load_run_config(config_path, overrides)
    needs_data = getattr(config.teacher.config, "data_root", None) == ""
    dataset = build_dataset(config, config.data.train_split, train=False) if needs_data else None
    path = build_teacher_file(config, dataset, pick_device(config.device))
    from safetensors.torch import load_file

    codes = load_file(str(path))["codebook"]
    click.echo(f"{config.teacher.name}: {tuple(codes.shape)} codes, dtype {codes.dtype}, "
               f"norm {float(torch.linalg.vector_norm(codes, dim=1).mean()):.3f} -> {path}")


@teacher.command("show")
@click.argument("teacher_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", default="codebook", show_default=True, help="Tensor key in TEACHER_FILE.")
@click.option("--student", "students", multiple=True, metavar="[LABEL=]CKPT",
              help="Tokenizer checkpoint whose semantic codebook to compare, optionally labelled (repeatable).")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), default=Path("teacher_histogram.png"),
              show_default=True)
def show(teacher_file: Path, key: str, students: tuple[str, ...], png: Path) -> None:
    """Print the teacher's size; plot its relation histogram against the students'."""
    from glotok_bench.histogram.plot import compare_histograms
    from glotok_bench.teachers.peer_files import read_tensor
    from glotok_bench.tokenizer.checkpoint import load_tokenizer

    codes = read_tensor(teacher_file, key)
    click.echo(f"teacher {teacher_file.name}: {codes.shape[0]} codes of dimension {codes.shape[1]}")
    semantic = {}
    for student in students:
        label, _, path = student.rpartition("=")
        tokenizer, payload = load_tokenizer(Path(path))
        codebook = tokenizer.semantic_codebook()
        if codebook is None:
            raise click.BadParameter(f"{path} has no semantic codebook", param_hint="--student")
        semantic[f"{label or Path(path).name} (step {payload.get('step')})"] = codebook.detach()
    kl = compare_histograms(codes, semantic, png)
    for name, value in kl.items():
        click.echo(f"  KL(teacher || {name}) = {value:.5f}")
    click.echo(f"wrote {png}")
