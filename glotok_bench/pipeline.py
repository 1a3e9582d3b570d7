"""The stages of an experiment, each a function of a :class:`RunConfig` and a folder.

``train_tokenizer -> evaluate_tokenizer_checkpoint -> tokenize -> train_generator_stage ->
evaluate_generator``. The CLI commands call these directly; grid cells call them through
the ``*_cell_stage`` adapters at the bottom (one per grid step name), which read earlier
steps' outputs. Every stage
returns plain data ``{"metrics": ..., "results": ..., "labels": ...}`` for run records.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs

from glotok_bench.config import ComponentChoice, config_digest
from glotok_bench.errors import ConfigError, GlotokError
from glotok_bench.interfaces import teacher_label
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


def build_dataset(config: RunConfig, split: str, *, train: bool, resolution: int | None = None) -> Any:
    """The configured dataset at the tokenizer's resolution (or ``resolution``: ten-crop tokens)."""
    choice = config.data.dataset
    return get_registry().create(
        "dataset", choice.name, choice.config, split=split,
        resolution=resolution or config.tokenizer.resolution, train=train,
    )


def run_labels(config: RunConfig) -> dict[str, Any]:
    """What a leaderboard row is called: method and the choices that distinguish it.

    Each part comes from its component's interface (:mod:`glotok_bench.interfaces`), so a
    plugin quantizer, supervision or teacher is labelled like a built-in one.
    """
    quantizer = config.tokenizer.quantizer
    supervision = get_registry().load("semantic_supervision", config.supervision.name)
    supervised = config.supervision.name != "none" and config.loss.semantic_weight > 0
    with_teacher = supervision.uses_teacher_codebook and supervised
    return {
        "method": config.method,
        "quantizer": quantizer.name,
        "codebook": quantizer.config.codebook_label(),
        "supervision": config.supervision.name if supervised else "none",
        "teacher": _teacher_label(config) if with_teacher else "-",
        "lambda_hist": config.loss.semantic_weight if with_teacher else 0.0,
        "residual": config.tokenizer.residual_head.name,
        "seed": config.train.seed,
        "steps": config.train.max_steps,
        "resolution": config.tokenizer.resolution,
    }


def _teacher_label(config: RunConfig) -> str:
    """A given teacher file is named by its file; a built teacher labels itself."""
    if config.supervision.config.teacher_file:
        return f"file:{Path(config.supervision.config.teacher_file).name}"
    choice = config.teacher
    return teacher_label(choice.name, get_registry().load("teacher", choice.name), choice.config)


# -- teacher and supervision ----------------------------------------------------------------


def build_teacher_file(config: RunConfig, train_dataset: Any, device: Any) -> Path:
    """Build (or find in the cache) the configured teacher codebook; return its file.

    A data-driven teacher with no ``data_root`` is pointed at the training data.
    """
    choice = config.teacher
    teacher_class = get_registry().load("teacher", choice.name)
    teacher_config = choice.config
    with_data = getattr(teacher_class, "with_data", None)  # optional: see interfaces.Teacher
    if with_data is not None:
        files = getattr(train_dataset, "files", None)
        teacher_config = with_data(teacher_config, None if files is None else files.root)
    teacher = teacher_class(teacher_config)
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
    registry = get_registry()
    if registry.load("semantic_supervision", choice.name).uses_teacher_codebook and not options.teacher_file:
        options = attrs.evolve(options, teacher_file=str(build_teacher_file(config, train_dataset, device)))
    semantic_dim = config.tokenizer.quantizer.config.semantic_dim()
    return registry.create("semantic_supervision", choice.name, options, semantic_dim=semantic_dim, device=device)


# -- stages ------------------------------------------------------------------------------


def check_tokenizer_builds(config: RunConfig) -> None:
    """Build the tokenizer on the meta device (no memory, no weights, well under a second):
    a tokenizer section that cannot make a model fails before the dataset and the teacher,
    whose k-means can take hours, are built."""
    import torch

    from glotok_bench.tokenizer.model import build_tokenizer

    try:
        with torch.device("meta"):
            build_tokenizer(config.tokenizer)
    except GlotokError:
        raise
    except Exception:  # noqa: BLE001 - e.g. a plugin that reads tensor values in __init__
        return  # it cannot be built on the meta device; the real build checks it later


def train_tokenizer(config: RunConfig, run_dir: Path, *, resume: bool = True) -> dict[str, Any]:
    from glotok_bench.device import distributed_context, pick_device, rank_zero_first
    from glotok_bench.train.trainer import train

    # Join the process group and pin this rank's GPU first: supervision and teacher are
    # built on the device they are given, which must be this rank's, not cuda:0.
    _rank, _world_size, device = distributed_context(pick_device(config.device))
    check_tokenizer_builds(config)
    dataset = build_dataset(config, config.data.train_split, train=True)
    with rank_zero_first():  # rank 0 builds (and caches) the teacher; the others read it
        supervision = build_supervision(config, dataset, device)
    summary = train(
        config.tokenizer, config.loss, config.train, dataset,
        run_dir=run_dir, device=str(device), supervision=supervision, resume=resume,
    )
    return {"results": summary.as_record(), "labels": run_labels(config), "no_op": _ran_no_step(summary)}


def evaluate_tokenizer_checkpoint(
    config: RunConfig, checkpoint: str | Path, out_dir: Path, *, weights: str = "ema",
    loaded: tuple[Any, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``loaded``: what ``load_tokenizer(checkpoint, weights=weights)`` returned, for a
    caller that has read the file already (a peer file is too big to read twice)."""
    from glotok_bench.device import pick_device
    from glotok_bench.eval.evaluator import run_evaluation
    from glotok_bench.tokenizer.checkpoint import load_tokenizer

    device = pick_device(config.device)
    tokenizer, _payload = loaded or load_tokenizer(checkpoint, weights=weights)
    tokenizer = tokenizer.to(device)
    # The images are prepared at the checkpoint's own resolution (a peer file brings its own).
    config = attrs.evolve(config, tokenizer=tokenizer.config)
    dataset = build_dataset(config, config.data.eval_split, train=False)
    result = run_evaluation(
        tokenizer, dataset, config.eval, device=device, batch_size=config.data.eval_batch_size,
        num_workers=config.data.num_workers, out_dir=out_dir,
    )
    info = dict(result.info)
    info["checkpoint"] = str(checkpoint)
    # What was evaluated: a checkpoint without EMA weights is read as trained, even when
    # "ema" was asked for.
    info["weights"] = "ema" if weights == "ema" and _payload.get("ema") is not None else "model"
    output = {"metrics": result.metrics, "results": info}
    if "family" in _payload:  # a peer checkpoint: its row names the family and the exact file
        info.update(tokenizer_family=_payload["family"], checkpoint_sha256=_payload["sha256"])
        output["labels"] = peer_labels(_payload, tokenizer)
    return output


def peer_labels(payload: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """Leaderboard labels of a released peer tokenizer (it has no run config of ours)."""
    return {
        "method": payload["family"],
        "family": payload["family"],
        "checkpoint_sha256": payload["sha256"],
        "quantizer": tokenizer.config.quantizer.name,
        "codebook": "+".join(str(n) for n in tokenizer.codebook_sizes.values()),
        "supervision": "-",
        "teacher": "-",
        "residual": tokenizer.config.residual_head.name,
        "resolution": tokenizer.config.resolution,
    }


def tokenize(config: RunConfig, checkpoint: str | Path, out_dir: Path, *, loaded: Any = None) -> dict[str, Any]:
    """``loaded``: the checkpoint as ``load_tokenizer`` returned it, if the caller read it."""
    from glotok_bench.device import pick_device
    from glotok_bench.generators.tokens import read_manifest
    from glotok_bench.tokenizer.tokenize import tokenize_dataset

    options = config.tokens.for_generator(get_registry().load("generator", config.generator.generator.name))
    try:
        manifest = read_manifest(out_dir)  # a complete earlier run, kept if it has these views
        if manifest.get("view_kind", "none") != options.views:
            raise GlotokError("other views")
    except GlotokError:  # none, or one killed mid-way: tokenize (again) from scratch
        dataset = build_dataset(config, config.data.train_split, train=False,
                                resolution=options.input_resolution(config.tokenizer.resolution))
        tokenize_dataset(checkpoint, dataset, out_dir, device=str(pick_device(config.device)),
                         dataset_name=config.data.dataset.name, overwrite=True, options=options, loaded=loaded)
        manifest = read_manifest(out_dir)
    skipped = (manifest.get("skipped") or {}).get("count", 0)
    return {"results": {"tokens": str(out_dir), "count": manifest.get("count"), "skipped": skipped}}


def _ran_no_step(summary: Any) -> bool:
    """A resumed run that was already at max_steps: its earlier record says more than this one."""
    steps = summary.get("steps_run") if isinstance(summary, dict) else getattr(summary, "steps_run", None)
    return steps == 0


def train_generator_stage(config: RunConfig, token_dir: Path, run_dir: Path, *, resume: bool = True) -> dict[str, Any]:
    from glotok_bench.generators.train import train_generator

    summary = train_generator(config.generator, token_dir, run_dir, resume=resume)
    labels = {"generator": config.generator.generator.name}
    return {"results": summary.as_record(), "labels": labels, "no_op": _ran_no_step(summary)}


def evaluate_generator(
    config: RunConfig, generator_checkpoint: str | Path, tokenizer_checkpoint: str | Path, out_dir: Path
) -> dict[str, Any]:
    from glotok_bench.atomic import staged_folder
    from glotok_bench.device import pick_device
    from glotok_bench.eval.samples import evaluate_samples
    from glotok_bench.generators.generate import generate_to_dir
    from glotok_bench.generators.options import SamplingOptions

    generation = config.generation
    device = pick_device(config.device)
    # Samples land in out_dir only once they are measured: a failure leaves none behind.
    with staged_folder(out_dir) as staging:
        produced = generate_to_dir(
            generator_checkpoint, staging, tokenizer_checkpoint=tokenizer_checkpoint,
            per_class=generation.per_class, options=SamplingOptions.of(generation),
            batch_size=generation.batch_size, device=str(device),
        )
        reference = build_dataset(config, generation.reference_split, train=False)
        # The scale actually used: unset in the config, it is the generator preset's.
        protocol = {**produced["protocol"], "samples_per_class": generation.per_class,
                    "cfg_scale": produced["protocol"]["sampling"]["cfg_scale"]}
        metrics = evaluate_samples(
            produced["npz"], reference, fid=generation.fid, inception_score=generation.inception_score,
            device=device, batch_size=config.data.eval_batch_size, sampling_protocol=protocol,
        )
    samples, grid = (out_dir / Path(produced[key]).name for key in ("npz", "grid"))
    return {"metrics": metrics, "results": {"samples": str(samples), "grid": str(grid),
                                            "sampling": produced["protocol"]["sampling"]}}


# -- grid cell stages (adapters from a grid step's context) --------------------------------


def _checkpoint_of(context: Any, step: str) -> str:
    try:
        return context.previous[step]["results"]["checkpoint"]
    except KeyError:
        raise ConfigError(f"grid step needs the '{step}' step to run before it") from None


def train_cell_stage(context: Any) -> dict[str, Any]:
    return train_tokenizer(context.config, context.run_dir / TOKENIZER_DIR)


def _tokenizer_of(context: Any) -> str:
    """The cell's tokenizer: its "train" step's checkpoint, else config.tokenizer_checkpoint."""
    if "train" not in context.previous and context.config.tokenizer_checkpoint:
        return str(Path(context.config.tokenizer_checkpoint).expanduser())
    return _checkpoint_of(context, "train")


def eval_cell_stage(context: Any) -> dict[str, Any]:
    return evaluate_tokenizer_checkpoint(context.config, _tokenizer_of(context), context.run_dir / EVAL_DIR)


def tokenize_cell_stage(context: Any) -> dict[str, Any]:
    return tokenize(context.config, _tokenizer_of(context), context.run_dir / TOKENS_DIR)


def generator_train_cell_stage(context: Any) -> dict[str, Any]:
    return train_generator_stage(context.config, context.run_dir / TOKENS_DIR, context.run_dir / GENERATOR_DIR)


def generator_eval_cell_stage(context: Any) -> dict[str, Any]:
    return evaluate_generator(
        context.config, _checkpoint_of(context, "gen-train"), _tokenizer_of(context),
        context.run_dir / SAMPLES_DIR,
    )
