"""The full config of one experiment: data, tokenizer, losses, supervision, teacher,
training, evaluation and (optionally) a generator stage.

Each section is owned by the module that uses it; this file only composes them. Presets
live in ``configs/`` and grids override any path of this tree (e.g. ``loss.semantic_weight``).
Importing it imports no torch (a test holds it to that): sections come from config-only
modules.
"""

from __future__ import annotations

from typing import Literal

import attrs

from glotok_bench.config import ComponentChoice, component_field
from glotok_bench.eval.options import EvalOptions, FrechetDistanceConfig, InceptionScoreConfig
from glotok_bench.generators.options import SamplingOptions
from glotok_bench.tokenizer.config import LossConfig, TokenizerConfig
from glotok_bench.tokenizer.tokenize import TokenizeConfig
from glotok_bench.train.config import GeneratorRunConfig, TrainConfig


@attrs.frozen(kw_only=True)
class DataConfig:
    dataset: ComponentChoice = component_field("dataset", "demo")
    train_split: str = "train"
    eval_split: str = "val"
    eval_batch_size: int = 32
    num_workers: int = 0


@attrs.frozen(kw_only=True)
class GenerationConfig(SamplingOptions):
    """Sampling and gFID/IS of the generator stage (ADM protocol: 50 per class).

    The sampling fields (cfg_scale, cfg_schedule, temperature, top_k, top_p, seed,
    kv_cache, sampler, steps_first, steps_last) are :class:`SamplingOptions`'; left
    unset, they take the generator preset's values (e.g. FAR's guidance 2.0).
    """

    per_class: int = 50
    batch_size: int = 32
    fid: FrechetDistanceConfig = FrechetDistanceConfig(label="gfid")
    inception_score: InceptionScoreConfig | None = InceptionScoreConfig()
    # Real images the samples are compared with when fid.reference_stats is not given.
    reference_split: str = "train"


@attrs.frozen(kw_only=True)
class RunConfig:
    name: str = "glotok"
    method: str = "GloTok"  # the row label in leaderboards
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cache_dir: str = ""  # teachers and statistics; "" = $GLOTOK_CACHE_DIR or ~/.cache/glotok_bench
    # An existing tokenizer checkpoint (ours, LlamaGen's, FQGAN's) for grid steps that
    # have no "train" step before them (e.g. steps = ["eval"] on released peer files).
    tokenizer_checkpoint: str = ""
    data: DataConfig = attrs.Factory(DataConfig)
    tokenizer: TokenizerConfig = attrs.Factory(TokenizerConfig)
    loss: LossConfig = attrs.Factory(LossConfig)
    # Weighted by loss.semantic_weight (lambda_hist for the histogram loss).
    supervision: ComponentChoice = component_field("semantic_supervision", "histogram")
    # Built (and cached) when supervision is "histogram" and names no teacher_file.
    teacher: ComponentChoice = component_field("teacher", "dinov2-kmeans")
    train: TrainConfig = attrs.Factory(TrainConfig)
    eval: EvalOptions = attrs.Factory(EvalOptions)
    # How `tokenize` writes the generators' token set (views per image).
    tokens: TokenizeConfig = attrs.Factory(TokenizeConfig)
    generator: GeneratorRunConfig = attrs.Factory(GeneratorRunConfig)
    generation: GenerationConfig = attrs.Factory(GenerationConfig)
