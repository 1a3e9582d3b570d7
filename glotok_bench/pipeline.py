"""The stages of an experiment, each a function of a :class:`RunConfig` and a folder.

``train_tokenizer -> evaluate_tokenizer_checkpoint -> tokenize -> train_generator_stage ->
evaluate_generator``. The CLI commands call these directly; grid cells call them through
the ``*_step`` adapters at the bottom, which read earlier steps' outputs. Every stage
returns plain data ``{"metrics": ..., "results": ..., "labels": ...}`` for run records.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs

from glotok_bench.config import ComponentChoice, config_digest
from glotok_bench.errors import ConfigError, GlotokError
from glotok_bench.registry import get_registry
from glotok_bench.runconfig import RunConfig

TOKENIZER_DIR = "tokenizer"
EVAL_DIR = "eval"
TOKENS_DIR = "tokens"
GENERATOR_DIR = "generator"
SAMPLES_DIR = "samples"


def cache_root(config: RunConfig) -> Path:
    if config.cache_dir:
        return Path(config.cache_dir).expanduser()
    return Path(os.environ.get("GLOTOK_CACHE_DIR", Path.home() / ".cache" / "glotok_bench"))


def build_dataset(config: RunConfig, split: str, *, train: bool) -> Any:
    choice = config.data.dataset
    return get_registry().create(
        "dataset", choice.name, choice.config, split=split, resolution=config.tokenizer.resolution, train=train
    )


def run_labels(config: RunConfig) -> dict[str, Any]:
    """What a leaderboard row is called: method and the choices that distinguish it."""
    quantizer = config.tokenizer.quantizer
    if quantizer.name == "dual":
        codebook = f"{quantizer.config.semantic_size}+{quantizer.config.visual_size}"
    else:
        codebook = str(getattr(quantizer.config, "codebook_size", "?"))
    supervised = config.supervision.name != "none" and config.loss.semantic_weight > 0
    histogram = config.supervision.name == "histogram" and supervised
    return {
        "method": config.method,
        "quantizer": quantizer.name,
        "codebook": codebook,
        "supervision": config.supervision.name if supervised else "none",
        "teacher": _teacher_label(config) if histogram else "-",
        "lambda_hist": config.loss.semantic_weight if histogram else 0.0,
        "residual": config.tokenizer.residual_head.name,
        "seed": config.train.seed,
        "steps": config.train.max_steps,
        "resolution": config.tokenizer.resolution,
    }


# Options that say where inputs live or only change speed: not part of what a teacher *is*.
_UNLABELLED_OPTIONS = {"data_root", "weights_path", "path", "batch_size", "kmeans_batch_size"}


def _teacher_label(config: RunConfig) -> str:
    """e.g. ``patch-kmeans(clustering=per-class, k=252)``: the name plus every option that
    differs from its default, so different teachers never share a leaderboard row."""
    if config.supervision.config.teacher_file:
        return f"file:{Path(config.supervision.config.teacher_file).name}"
    choice = config.teacher
    defaults = type(choice.config)()
    changed = [
        f"{field.name}={getattr(choice.config, field.name)}"
        for field in attrs.fields(type(choice.config))
        if field.name not in _UNLABELLED_OPTIONS
        and getattr(choice.config, field.name) != getattr(defaults, field.name)
    ]
    if getattr(choice.config, "allow_random_init", False) and not getattr(choice.config, "weights_path", ""):
        changed = [c for c in changed if not c.startswith("allow_random_init=")] + ["RANDOM-INIT encoder"]
    return f"{choice.name}({', '.join(changed)})" if changed else choice.name


# -- teacher and supervision ----------------------------------------------------------------


def build_teacher_file(config: RunConfig, train_dataset: Any, device: Any) -> Path:
    """Build (or find in the cache) the configured teacher codebook; return its file.

    A data-driven teacher with no ``data_root`` is pointed at the training data.
    """
    choice = config.teacher
    teacher_config = choice.config
    if getattr(teacher_config, "data_root", None) == "":
        files = getattr(train_dataset, "files", None)
        if files is None:
            raise ConfigError(f"teacher {choice.name!r} needs teacher.data_root (an image folder)")
        teacher_config = attrs.evolve(teacher_config, data_root=str(files.root))
    teacher = get_registry().create("teacher", choice.name, teacher_config)
    cache_dir = cache_root(config)  # teachers add their own "teachers/" folder
    codes = teacher.build(cache_dir, device)
    if hasattr(teacher, "cache_file"):
        return Path(teacher.cache_file(cache_dir))
    # A plugin teacher without its own cache: keep its codes where supervision can read them.
    from safetensors.torch import save_file

    from glotok_bench.atomic import atomic_path

    path = cache_dir / "teachers" / f"{choice.name}-{config_digest(ComponentChoice(choice.name, teacher_config))}.safetensors"
    if not path.is_file():
        with atomic_path(path) as tmp:
            save_file({"codebook": codes.detach().float().cpu().contiguous()}, str(tmp))
    return path


def build_supervision(config: RunConfig, train_dataset: Any, device: Any) -> Any:
    """The semantic-supervision module, or ``None`` when it is off."""
    choice = config.supervision
    if choice.name == "none" or config.loss.semantic_weight == 0:
        return None
    options = choice.config
    if choice.name == "histogram" and not options.teacher_file:
        options = attrs.evolve(options, teacher_file=str(build_teacher_file(config, train_dataset, device)))
    quantizer = config.tokenizer.quantizer.config
    semantic_dim = getattr(quantizer, "code_dim", None)
    return get_registry().create("semantic_supervision", choice.name, options, semantic_dim=semantic_dim,
                                 device=device)


# -- stages ------------------------------------------------------------------------------


def train_tokenizer(config: RunConfig, run_dir: Path, *, resume: bool = True) -> dict[str, Any]:
    from glotok_bench.device import pick_device
    from glotok_bench.train.trainer import train

    device = pick_device(config.device)
    dataset = build_dataset(config, config.data.train_split, train=True)
    supervision = build_supervision(config, dataset, device)
    results = train(
        config.tokenizer, config.loss, config.train, dataset,
        run_dir=run_dir, device=str(device), supervision=supervision, resume=resume,
    )
    return {"results": results, "labels": run_labels(config)}


def evaluate_tokenizer_checkpoint(
    config: RunConfig, checkpoint: str | Path, out_dir: Path, *, weights: str = "ema"
) -> dict[str, Any]:
    from glotok_bench.device import pick_device
    from glotok_bench.eval.evaluator import run_evaluation
    from glotok_bench.tokenizer.checkpoint import load_tokenizer

    device = pick_device(config.device)
    tokenizer, _payload = load_tokenizer(checkpoint, weights=weights, device=device)
    dataset = build_dataset(config, config.data.eval_split, train=False)
    result = run_evaluation(
        tokenizer, dataset, config.eval, device=device, batch_size=config.data.eval_batch_size,
        num_workers=config.data.num_workers, out_dir=out_dir,
    )
    info = dict(result.info)
    info["checkpoint"] = str(checkpoint)
    info["weights"] = weights
    return {"metrics": result.metrics, "results": info}


def tokenize(config: RunConfig, checkpoint: str | Path, out_dir: Path) -> dict[str, Any]:
    from glotok_bench.device import pick_device
    from glotok_bench.tokenizer.tokenize import read_manifest, tokenize_dataset

    try:
        manifest = read_manifest(out_dir)  # a complete earlier run
    except GlotokError:  # none, or one killed mid-way: tokenize (again) from scratch
        dataset = build_dataset(config, config.data.train_split, train=False)
        tokenize_dataset(checkpoint, dataset, out_dir, device=str(pick_device(config.device)),
                         dataset_name=config.data.dataset.name, overwrite=True)
        manifest = read_manifest(out_dir)
    return {"results": {"tokens": str(out_dir), "count": manifest.get("count")}}


def train_generator_stage(config: RunConfig, token_dir: Path, run_dir: Path, *, resume: bool = True) -> dict[str, Any]:
    from glotok_bench.generators.train import train_generator

    results = train_generator(config.generator, token_dir, run_dir, resume=resume)
    labels = {"generator": config.generator.generator.name}
    return {"results": results, "labels": labels}


def evaluate_generator(
    config: RunConfig, generator_checkpoint: str | Path, tokenizer_checkpoint: str | Path, out_dir: Path
) -> dict[str, Any]:
    from glotok_bench.device import pick_device
    from glotok_bench.eval.samples import evaluate_samples
    from glotok_bench.generators.generate import generate_to_dir

    generation = config.generation
    device = pick_device(config.device)
    produced = generate_to_dir(
        generator_checkpoint, out_dir, tokenizer_checkpoint=tokenizer_checkpoint,
        per_class=generation.per_class, cfg_scale=generation.cfg_scale, temperature=generation.temperature,
        top_k=generation.top_k, top_p=generation.top_p, seed=generation.seed,
        batch_size=generation.batch_size, device=str(device),
    )
    reference = build_dataset(config, generation.reference_split, train=False)
    protocol = {**produced["protocol"], "samples_per_class": generation.per_class,
                "cfg_scale": generation.cfg_scale}
    metrics = evaluate_samples(
        produced["npz"], reference, fid=generation.fid, inception_score=generation.inception_score,
        device=device, batch_size=config.data.eval_batch_size, sampling_protocol=protocol,
    )
    return {"metrics": metrics, "results": {"samples": str(produced["npz"]), "grid": str(produced["grid"])}}


# -- grid step adapters ------------------------------------------------------------------


def _checkpoint_of(context: Any, step: str) -> str:
    try:
        return context.previous[step]["results"]["checkpoint"]
    except KeyError:
        raise ConfigError(f"grid step needs the '{step}' step to run before it") from None


def train_step(context: Any) -> dict[str, Any]:
    return train_tokenizer(context.config, context.run_dir / TOKENIZER_DIR)


def eval_step(context: Any) -> dict[str, Any]:
    return evaluate_tokenizer_checkpoint(
        context.config, _checkpoint_of(context, "train"), context.run_dir / EVAL_DIR
    )


def tokenize_step(context: Any) -> dict[str, Any]:
    return tokenize(context.config, _checkpoint_of(context, "train"), context.run_dir / TOKENS_DIR)


def generator_train_step(context: Any) -> dict[str, Any]:
    return train_generator_stage(context.config, context.run_dir / TOKENS_DIR, context.run_dir / GENERATOR_DIR)


def generator_eval_step(context: Any) -> dict[str, Any]:
    return evaluate_generator(
        context.config, _checkpoint_of(context, "gen-train"), _checkpoint_of(context, "train"),
        context.run_dir / SAMPLES_DIR,
    )
