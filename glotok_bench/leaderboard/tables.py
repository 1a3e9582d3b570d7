"""What each leaderboard CSV holds: its records, columns, protocol identity and order.

Every table is one :class:`TableSpec`, and one code path (``build.py``) turns any spec into
a CSV, so adding a table is adding a spec here. No pandas at import time: the CLI imports
this module to start.

A row is identified by its source (``paper`` or ``measured``), its protocol (the fields in
``protocol_fields``: data, split, sample count, resolution, extractor, ...), its key labels
and everything else the runs were labelled with; only the seed is averaged over. Ranks are
computed inside one (source, protocol) group, so a stand-in extractor's rFID is never ranked
against a real Inception rFID, and paper numbers are never ranked against ours.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class MetricSpec:
    """One metric column, plus ``<column>_std`` (sample std over seeds) and ``<column>_ci95``
(half-width of the 95% t-interval of the mean over seeds: t(0.975, n-1) * std / sqrt(n)).

    ``keys`` are the names the metric has in a record (``metrics`` for evaluation numbers,
    ``results.train`` for training cost), before any ``@extractor`` suffix.
    """

    column: str
    keys: tuple[str, ...]
    lower_is_better: bool
    source: str = "metrics"  # "metrics" | "train"
    scale: float = 1.0  # multiplies the recorded value (bytes -> MiB)
    # Also report the record's own spread (e.g. Table 3's std over t-SNE repeats) as
    # ``<column>_repeat_std``; it is a different quantity from the spread over seeds.
    repeat_std: bool = False
    # The number depends on a feature extractor: the CSV column is named after it
    # (``rfid@standin-randconv-v1``), so a stand-in value never sits under a bare ``rfid``.
    per_extractor: bool = False


@attrs.frozen
class TableSpec:
    name: str  # file stem in leaderboards/
    title: str
    description: str
    paper_table: str  # the paper table whose published rows it holds; "" for none
    keys: tuple[str, ...]  # label columns that identify a variant, in display order
    metrics: tuple[MetricSpec, ...]
    rank_by: str  # a metric column; ranked within (source, protocol)
    protocol_fields: tuple[str, ...]
    # Labels a record must carry to enter (an ablation's axis); every record with one of the
    # table's metrics enters otherwise.
    requires: tuple[str, ...] = ()
    # Within a group rows are sorted by these columns (numbers numerically), then by every
    # other column so the order never depends on the order records were read in.
    order: tuple[str, ...] = ("rank",)

    @property
    def metric(self) -> dict[str, MetricSpec]:
        return {m.column: m for m in self.metrics}

    def metric_columns(self) -> list[str]:
        columns = []
        for m in self.metrics:
            columns += [m.column, f"{m.column}_std", f"{m.column}_ci95"]
            columns += [f"{m.column}_repeat_std"] if m.repeat_std else []
        return columns

    def columns(self) -> list[str]:
        """The CSV header."""
        return [
            "source", "protocol", "rank", *self.keys, "training", "other_labels",
            *self.metric_columns(), "n",
            *[f for f in self.protocol_fields if f not in self.keys],
            "run_ids", "citation", "note",
        ]


# Labels that never identify a variant: seeds are what rows average over, the rest name
# the job rather than the experiment.
IGNORED_LABELS = frozenset({"seed", "cell", "grid", "run_id", "steps"})

# Grid cells are labelled with their axes' config paths; these map the paths we know to the
# leaderboard's label names. A label spelled with the plain name wins over an alias.
LABEL_ALIASES: dict[str, tuple[str, ...]] = {
    "seed": ("train.seed",),
    "lambda_hist": ("loss.semantic_weight", "loss.histogram_weight"),
    "residual": ("tokenizer.residual_head.name", "tokenizer.residual_head"),
    "quantizer": ("tokenizer.quantizer.name", "tokenizer.quantizer"),
    "steps": ("train.max_steps",),
}

# Protocol fields of evaluation metrics. ``data_sha`` is the dataset's manifest or file-list
# hash, so two different folders that both call themselves "imagefolder" never share a group.
DATA_PROTOCOL = ("dataset", "data_sha", "split", "count", "resolution", "extractor")
# Training cost is comparable only on the same device, input size and batch size.
TRAIN_PROTOCOL = ("device", "resolution", "batch_size")

_RECONSTRUCTION_METRICS = (
    MetricSpec("rfid", ("rfid",), lower_is_better=True, per_extractor=True),
    MetricSpec("psnr", ("psnr",), lower_is_better=False),
)
_TOKENIZER_KEYS = ("method", "quantizer", "codebook", "supervision", "teacher", "lambda_hist", "residual")
_ABLATION_DESCRIPTION = (
    "rFID and PSNR of tokenizers that differ along this ablation's axis; other labels are "
    "shown in other_labels. Paper rows: Table {table}."
)

TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        name="reconstruction",
        title="Reconstruction (paper Table 1)",
        description="Reconstruction quality and codebook usage of each tokenizer.",
        paper_table="1",
        keys=("codebook_type", *_TOKENIZER_KEYS),
        metrics=(
            *_RECONSTRUCTION_METRICS,
            MetricSpec("rkid", ("rkid",), lower_is_better=True, per_extractor=True),
            MetricSpec("ssim", ("ssim",), lower_is_better=False),
            MetricSpec("lpips", ("lpips",), lower_is_better=True),
            MetricSpec("usage_semantic", ("usage/semantic",), lower_is_better=False),
            MetricSpec("usage_visual", ("usage/visual",), lower_is_better=False),
            MetricSpec("usage_codes", ("usage/codes",), lower_is_better=False),
            MetricSpec("perplexity_semantic", ("perplexity/semantic",), lower_is_better=False),
            MetricSpec("perplexity_visual", ("perplexity/visual",), lower_is_better=False),
            MetricSpec("perplexity_codes", ("perplexity/codes",), lower_is_better=False),
        ),
        rank_by="rfid",
        protocol_fields=DATA_PROTOCOL,
    ),
    TableSpec(
        name="generation",
        title="Class-conditional generation (paper Table 2)",
        description="gFID and Inception Score of generators trained on each tokenizer.",
        paper_table="2",
        keys=("method", "codebook", "quantizer", "generator_family", "generator", "params", "tokens"),
        metrics=(
            MetricSpec("gfid", ("gfid",), lower_is_better=True, per_extractor=True),
            MetricSpec("is", ("is",), lower_is_better=False, per_extractor=True),
        ),
        rank_by="gfid",
        protocol_fields=(*DATA_PROTOCOL, "reference", "cfg_scale", "samples_per_class"),
    ),
    TableSpec(
        name="uniformity",
        title="Latent uniformity (paper Table 3)",
        description=(
            "VA-VAE's uniformity metrics of the quantized semantic latents (t-SNE + KDE); "
            "_repeat_std is the spread over t-SNE repeats inside one run."
        ),
        paper_table="3",
        keys=("codebook_type", *_TOKENIZER_KEYS),
        metrics=(
            MetricSpec("density_cv", ("density_cv", "uniformity/density_cv"), lower_is_better=True, repeat_std=True),
            MetricSpec(
                "normalized_entropy", ("normalized_entropy", "uniformity/normalized_entropy"),
                lower_is_better=False, repeat_std=True,
            ),
            MetricSpec("gini", ("gini", "uniformity/gini"), lower_is_better=True, repeat_std=True),
        ),
        rank_by="density_cv",
        # t-SNE + KDE on latents: no image feature extractor is involved.
        protocol_fields=("dataset", "data_sha", "split", "count", "resolution", "branch", "points"),
    ),
    TableSpec(
        name="ablation_histogram",
        title="Ablation: histogram relation weight (paper Table 4)",
        description=_ABLATION_DESCRIPTION.format(table=4),
        paper_table="4",
        keys=("method", "codebook", "supervision", "lambda_hist", "teacher", "residual"),
        metrics=_RECONSTRUCTION_METRICS,
        rank_by="rfid",
        protocol_fields=DATA_PROTOCOL,
        requires=("lambda_hist",),
        order=("lambda_hist", "supervision", "rank"),
    ),
    TableSpec(
        name="ablation_components",
        title="Ablation: histogram relation x residual head (paper Table 5)",
        description=_ABLATION_DESCRIPTION.format(table=5),
        paper_table="5",
        keys=("method", "codebook", "supervision", "lambda_hist", "residual"),
        metrics=_RECONSTRUCTION_METRICS,
        rank_by="rfid",
        protocol_fields=DATA_PROTOCOL,
        requires=("residual",),
        order=("supervision", "residual", "rank"),
    ),
    TableSpec(
        name="ablation_teachers",
        title="Ablation: source of global relations (paper Table 6)",
        description=_ABLATION_DESCRIPTION.format(table=6),
        paper_table="6",
        keys=("method", "codebook", "teacher", "teacher_semantics", "residual"),
        metrics=_RECONSTRUCTION_METRICS,
        rank_by="rfid",
        protocol_fields=DATA_PROTOCOL,
        requires=("teacher",),
        order=("teacher", "rank"),
    ),
    TableSpec(
        name="training_cost",
        title="Training cost",
        description=(
            "Tokenizer training throughput and peak memory by supervision. The paper (App. B.2) "
            "reports that histogram supervision, which runs no teacher network while training, cuts "
            "training time by over 15% and GPU memory by nearly 10% against local supervision; "
            "see claims.csv for our comparison."
        ),
        paper_table="",
        keys=("method", "quantizer", "codebook", "supervision", "teacher", "residual"),
        metrics=(
            MetricSpec("images_per_s", ("images_per_s",), lower_is_better=False, source="train"),
            MetricSpec("step_time_s", ("step_time_s",), lower_is_better=True, source="train"),
            MetricSpec(
                "peak_memory_mib", ("peak_memory_bytes",), lower_is_better=True, source="train",
                scale=1 / 2**20,
            ),
            MetricSpec("wall_time_s", ("wall_time_s",), lower_is_better=True, source="train"),
        ),
        rank_by="images_per_s",
        protocol_fields=TRAIN_PROTOCOL,
        order=("supervision", "rank"),
    ),
)


# Extractors whose FID/IS is the literature's (torch-fidelity's graph; the paper's numbers).
INCEPTION_EXTRACTORS = frozenset({"inception-v3", "inception-v3-compat"})


def extractor_column(column: str, extractor: str) -> str:
    """``rfid`` on the FID Inception graph, ``rfid@<extractor>`` on anything else."""
    return column if extractor in INCEPTION_EXTRACTORS else f"{column}@{extractor or 'unknown-extractor'}"


def table(name: str) -> TableSpec:
    for spec in TABLES:
        if spec.name == name:
            return spec
    raise KeyError(name)
