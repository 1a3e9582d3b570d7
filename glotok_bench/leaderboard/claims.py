"""claims.csv: each claim of the paper as a comparison of two arms of our runs, with a verdict.

A claim names a leaderboard table, a metric and two arms: ``a`` is what the paper
recommends, ``b`` what it improves on. An arm is a set of label patterns (fnmatch, on the
runs' labels under their leaderboard names). Runs of the two arms are paired only when
everything else agrees: protocol (data, split, count, resolution, extractor), training
length and every label outside the claim's ``vary`` list. Seeds are what each arm averages
over. Every (a variant, b variant, context) found gives one row; a claim with no such pair
still gets one row, with empty numbers and verdict ``undecided``.

The interval is Welch's t-interval (95%) for ``mean_a - mean_b`` over seeds (unpaired: the
arms' seeds share nothing but their number). ``verdict`` is ``supports`` when the interval
excludes 0 on the paper's side, ``contradicts`` when it excludes 0 on the other side, and
``undecided`` otherwise, and always when an arm has fewer than ``MIN_SEEDS`` runs: with 2-4
seeds a t-interval is too wide or too fragile to call. Deterministic: no resampling.

B.2 (step time and peak memory) also has rows from benchmarks/results/supervision_ab.csv,
when ``regenerate`` is given that folder: there the arms are measured back to back in each
repeat, so the interval is a paired t-interval over repeats, and rows of a quick check
(fewer than 10 repeats) are never decided.
"""

from __future__ import annotations

import csv
import fnmatch
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from glotok_bench.leaderboard.tables import IGNORED_LABELS, TableSpec, extractor_column, table

if TYPE_CHECKING:
    import pandas as pd

    from glotok_bench.leaderboard.collect import Collection
    from glotok_bench.leaderboard.extract import Contribution

MIN_SEEDS = 5
LEVEL = 0.95
COLUMNS = (
    "claim", "paper_table", "metric", "better", "arm_a", "arm_b", "n_a", "n_b", "mean_a", "mean_b",
    "diff", "rel_diff", "ci_low", "ci_high", "method", "verdict", "paper", "protocol", "training",
    "context", "run_ids_a", "run_ids_b",
)  # fmt: skip


@attrs.frozen
class Arm:
    name: str
    where: tuple[tuple[str, str], ...]  # (label, fnmatch pattern) that must all match
    where_not: tuple[tuple[str, str], ...] = ()  # (label, pattern) that must not match

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(fnmatch.fnmatchcase(labels.get(k, ""), p) for k, p in self.where) and not any(
            fnmatch.fnmatchcase(labels.get(k, ""), p) for k, p in self.where_not
        )


@attrs.frozen
class Claim:
    claim: str
    paper_table: str
    table: str  # the leaderboard table whose per-run numbers are compared
    metric: str  # a metric column of that table
    a: Arm  # the paper's choice
    b: Arm  # what it is claimed to beat
    vary: tuple[str, ...]  # labels that may differ between paired runs (besides the arms' own)
    paper: str  # what the paper reports for this comparison

    @property
    def decides(self) -> bool:
        """Timings taken inside training runs, under whatever load the machine had while each
        run ran, are shown but never decide a claim: only interleaved A/B timing does (B.2
        rows from benchmarks/supervision_ab.py)."""
        return self.metric not in _TIMED_INSIDE_RUNS

    @property
    def spec(self) -> TableSpec:
        return table(self.table)


_HIST = (("supervision", "histogram"), ("lambda_hist", "0.01"))
_NO_HEAD = (("residual", "none"),)
_SUPERVISION = ("supervision", "lambda_hist", "teacher")
# The random-codebook control of Table 6: a teacher file of random unit vectors
# (grids/cpu/evidence/teachers.toml), labelled file:random-*.
_RANDOM_TEACHER = (("teacher", "file:random-*"),)
# Histogram supervision as the paper means it: any teacher but that control.
_HIST_ANY = Arm("histogram", (("supervision", "histogram"),), _RANDOM_TEACHER)


_TIMED_INSIDE_RUNS = frozenset({"images_per_s"})


def _pair(claim: str, paper_table: str, table_name: str, metrics: tuple[str, ...], a: Arm, b: Arm,
          vary: tuple[str, ...], paper: str) -> list[Claim]:
    return [Claim(claim, paper_table, table_name, m, a, b, vary, paper) for m in metrics]


CLAIMS: tuple[Claim, ...] = (
    *_pair("histogram relation loss improves reconstruction", "4", "ablation_histogram", ("rfid", "psnr"),
           Arm("histogram, lambda 0.01, no residual", _HIST + _NO_HEAD, _RANDOM_TEACHER),
           Arm("no semantic supervision, no residual", (("supervision", "none"), *_NO_HEAD)),
           _SUPERVISION, "rFID 1.21 vs 1.43, PSNR 22.23 vs 22.06 (Table 4, 40 epochs)"),
    *_pair("lambda_hist 0.01 beats 0.1", "4", "ablation_histogram", ("rfid", "psnr"),
           Arm("lambda 0.01", _HIST + _NO_HEAD, _RANDOM_TEACHER),
           Arm("lambda 0.1", (("supervision", "histogram"), ("lambda_hist", "0.1"), *_NO_HEAD)),
           ("lambda_hist",), "rFID 1.21 vs 1.27, PSNR 22.23 vs 21.97 (Table 4)"),
    *_pair("the residual head improves reconstruction", "5", "ablation_components", ("rfid", "psnr"),
           Arm("histogram + residual head", (*_HIST, ("residual", "transformer")), _RANDOM_TEACHER),
           Arm("histogram, no residual head", _HIST + _NO_HEAD, _RANDOM_TEACHER),
           ("residual",), "rFID 0.92 vs 0.97, PSNR 22.44 vs 22.30 (Table 5)"),
    *_pair("histogram supervision makes the semantic latents more uniform than none", "3", "uniformity",
           ("density_cv", "normalized_entropy", "gini"),
           _HIST_ANY, Arm("no semantic supervision", (("supervision", "none"),)),
           _SUPERVISION, "no unsupervised arm published; GloTok 0.217 / 0.9972 / 0.1168 vs VQ-VAE 0.221 / 0.9971 / 0.1191"),
    *_pair("histogram supervision makes the semantic latents more uniform than local supervision", "3",
           "uniformity", ("density_cv", "normalized_entropy", "gini"),
           _HIST_ANY, Arm("local InfoNCE", (("supervision", "local-infonce"),)),
           _SUPERVISION, "GloTok 0.217 / 0.9972 / 0.1168 vs FQGAN 0.225 / 0.9970 / 0.1202 (Table 3)"),
    *_pair("a semantic teacher beats a random codebook", "6", "ablation_teachers", ("rfid", "psnr"),
           Arm("histogram, semantic teacher", (("supervision", "histogram"),), _RANDOM_TEACHER),
           Arm("histogram, random-codebook teacher", (("supervision", "histogram"), *_RANDOM_TEACHER)),
           ("teacher", "teacher_semantics"), "no random control published; teachers span rFID 0.95-0.98 (Table 6)"),
    *_pair("histogram supervision trains faster and lighter than local supervision", "B.2", "training_cost",
           ("peak_memory_mib", "images_per_s"),
           _HIST_ANY, Arm("local InfoNCE", (("supervision", "local-infonce"),)),
           _SUPERVISION, "training time over 15% lower, GPU memory nearly 10% lower (App. B.2)"),
)
_NOT_INTERLEAVED = ("not decided: timed inside training runs under whatever load each run had, "
                    "not interleaved A/B (benchmarks/supervision_ab.py rows decide step time)")


@attrs.frozen
class _Variant:
    labels: tuple[tuple[str, str], ...]  # all labels but the ignored ones (seeds pooled)
    runs: dict[str, list[tuple[str, float]]]  # sample (seed) -> [(run id, value)]

    @property
    def values(self) -> list[float]:
        """One value per seed, sorted: runs sharing a seed are one sample (their mean)."""
        return sorted(math.fsum(sorted(v for _, v in runs)) / len(runs) for runs in self.runs.values())

    @property
    def run_ids(self) -> list[str]:
        return sorted(run_id for runs in self.runs.values() for run_id, _ in runs)


def _groups(claim: Claim, contributions: list[Contribution]) -> dict[tuple, dict[str, list[_Variant]]]:
    """context -> {"a": [variants], "b": [variants]}."""
    from glotok_bench.leaderboard.build import protocol_label
    from glotok_bench.leaderboard.extract import sample_key

    spec = claim.spec
    # Labels an arm pins (or the claim varies) may differ between paired runs; an excluded
    # value (where_not) frees nothing, so e.g. teachers still have to match.
    free = set(claim.vary) | {k for k, _ in claim.a.where + claim.b.where}
    variants: dict[tuple, dict[str, dict[tuple, dict[str, list[tuple[str, float]]]]]] = {}
    for index, c in enumerate(contributions):
        measurement = c.row.metrics.get(claim.metric)
        if measurement is None:
            continue
        labels = {k: v for k, v in c.labels.items() if k not in IGNORED_LABELS}
        arm = "a" if claim.a.matches(labels) else "b" if claim.b.matches(labels) else None
        if arm is None:
            continue
        protocol = protocol_label(spec, c.row.protocol)
        context_labels = tuple(sorted((k, v) for k, v in labels.items() if k not in free))
        context = (protocol, c.training, context_labels, c.row.protocol.get("extractor", ""))
        by_arm = variants.setdefault(context, {"a": {}, "b": {}})
        samples = by_arm[arm].setdefault(tuple(sorted(labels.items())), {})
        samples.setdefault(sample_key(c, index), []).append((c.run_id, measurement.value))
    return {
        context: {arm: [_Variant(k, v) for k, v in sorted(found.items())] for arm, found in arms.items()}
        for context, arms in sorted(variants.items())
    }


def welch_difference(a: list[float], b: list[float]) -> tuple[float, float, float, float, float]:
    """mean_a, mean_b, diff, ci_low, ci_high (NaN where a spread is needed and absent)."""
    mean_a, mean_b = math.fsum(a) / len(a), math.fsum(b) / len(b)
    diff = mean_a - mean_b
    if len(a) < 2 or len(b) < 2:
        return mean_a, mean_b, diff, math.nan, math.nan
    var_a = math.fsum((x - mean_a) ** 2 for x in a) / (len(a) - 1) / len(a)
    var_b = math.fsum((x - mean_b) ** 2 for x in b) / (len(b) - 1) / len(b)
    se = math.sqrt(var_a + var_b)
    if se == 0:
        return mean_a, mean_b, diff, diff, diff
    df = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))
    from scipy import stats

    half = float(stats.t.ppf(0.5 + LEVEL / 2, df)) * se
    return mean_a, mean_b, diff, diff - half, diff + half


def _verdict(lower_is_better: bool, n_a: int, n_b: int, low: float, high: float) -> tuple[str, str]:
    method = "Welch t-interval (95%) of mean_a - mean_b over seeds, unpaired"
    if min(n_a, n_b) < 2:
        method += "; no interval: an arm has a single run"
    if min(n_a, n_b) < MIN_SEEDS:
        return "undecided", f"{method}; fewer than {MIN_SEEDS} seeds per arm (n_a={n_a}, n_b={n_b}): not decided"
    # The paper's side of 0: a lower a is better for lower-is-better metrics.
    better_side, worse_side = (high < 0, low > 0) if lower_is_better else (low > 0, high < 0)
    if better_side:
        return "supports", method
    if worse_side:
        return "contradicts", method
    return "undecided", f"{method}; the interval contains 0"


def _describe(arm: Arm, variant: _Variant, vary: tuple[str, ...]) -> str:
    shown = [f"{k}={v}" for k, v in variant.labels if k in vary and k not in dict(arm.where)]
    return arm.name + (f" [{'; '.join(shown)}]" if shown else "")


def claim_rows(claim: Claim, collection: Collection) -> list[dict[str, str]]:
    from glotok_bench.leaderboard.build import format_number

    spec = claim.spec
    m = spec.metric[claim.metric]
    base = {"claim": claim.claim, "paper_table": claim.paper_table, "better": "lower" if m.lower_is_better else "higher",
            "paper": claim.paper}
    rows = []
    for (protocol, training, context, extractor), arms in _groups(claim, collection.contributions[claim.table]).items():
        for va in arms["a"]:
            for vb in arms["b"]:
                a, b = va.values, vb.values
                mean_a, mean_b, diff, low, high = welch_difference(a, b)
                verdict, method = _verdict(m.lower_is_better, len(a), len(b), low, high)
                if not claim.decides:
                    verdict, method = "undecided", f"{method}; {_NOT_INTERLEAVED}"
                rows.append({
                    **base,
                    "metric": extractor_column(m.column, extractor) if m.per_extractor else m.column,
                    "arm_a": _describe(claim.a, va, claim.vary), "arm_b": _describe(claim.b, vb, claim.vary),
                    "n_a": str(len(a)), "n_b": str(len(b)),
                    "mean_a": format_number(mean_a), "mean_b": format_number(mean_b), "diff": format_number(diff),
                    "rel_diff": format_number(diff / mean_b) if mean_b else "",
                    "ci_low": format_number(low), "ci_high": format_number(high),
                    "method": method, "verdict": verdict, "protocol": protocol, "training": training,
                    "context": "; ".join(f"{k}={v}" for k, v in context),
                    "run_ids_a": " ".join(va.run_ids), "run_ids_b": " ".join(vb.run_ids),
                })  # fmt: skip
    if not rows:
        rows.append({**{c: "" for c in COLUMNS}, **base, "metric": m.column, "arm_a": claim.a.name,
                     "arm_b": claim.b.name, "n_a": "0", "n_b": "0", "verdict": "undecided",
                     "method": "no runs of both arms under one protocol, training length and setting"})
    return rows


# Benchmark rows behind B.2 (benchmarks/supervision_ab.py): interleaved A/B repeats.
AB_FILE = "supervision_ab.csv"
AB_CLAIM = CLAIMS[-1]
_AB_SETTING = ("device", "device_name", "preset", "resolution", "batch_size", "semantic_size", "threads",
               "teacher_model", "teacher_image_size", "head_width", "precision")


def benchmark_claim_rows(results: Path | None) -> list[dict[str, str]]:
    """B.2 from ``results/supervision_ab.csv``: per benchmark run and codebook size, the
    histogram (a) and local (b) arms' step time and peak memory, with a paired t-interval
    over repeats (each repeat measures both arms back to back)."""
    from glotok_bench.leaderboard.build import format_number

    path = None if results is None else Path(results) / AB_FILE
    if path is None or not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        lines = [line for line in csv.DictReader(handle) if line.get("run_id")]
    runs: dict[tuple, dict[str, dict[str, dict[str, str]]]] = {}
    for line in lines:
        key = (line["run_id"], line["run_kind"], *(line.get(f, "") for f in _AB_SETTING))
        runs.setdefault(key, {}).setdefault(line["repeat"], {})[line["supervision"]] = line
    rows = []
    size_at = 2 + _AB_SETTING.index("semantic_size")
    for key, repeats in sorted(runs.items(), key=lambda item: (item[0][0], int(item[0][size_at] or 0), item[0])):
        run_id, kind, *setting = key
        pairs = [r for _, r in sorted(repeats.items(), key=lambda item: int(item[0]))
                 if {"histogram", "local-infonce"} <= set(r)]
        if not pairs:
            continue
        setting = dict(zip(_AB_SETTING, setting, strict=True))
        for metric in ("step_ms", "peak_memory_mb"):
            a = [float(p["histogram"][metric]) for p in pairs]
            b = [float(p["local-infonce"][metric]) for p in pairs]
            mean_a, mean_b, diff, low, high = _paired(a, b)
            verdict, method = _verdict(True, len(a), len(b), low, high)
            method = method.replace("Welch t-interval (95%) of mean_a - mean_b over seeds, unpaired",
                                    "paired t-interval (95%) of a - b over interleaved repeats")
            if kind != "result":
                verdict, method = "undecided", f"{method}; {kind}"
            rows.append({
                "claim": AB_CLAIM.claim, "paper_table": AB_CLAIM.paper_table, "metric": metric, "better": "lower",
                "arm_a": f"histogram [semantic codes={setting['semantic_size']}]",
                "arm_b": (f"local InfoNCE [semantic codes={setting['semantic_size']}; teacher="
                          f"{setting['teacher_model']}@{setting['teacher_image_size']}px; head={setting['head_width']}]"),
                "n_a": str(len(a)), "n_b": str(len(b)), "mean_a": format_number(mean_a),
                "mean_b": format_number(mean_b), "diff": format_number(diff),
                "rel_diff": format_number(diff / mean_b) if mean_b else "", "ci_low": format_number(low),
                "ci_high": format_number(high), "method": method, "verdict": verdict, "paper": AB_CLAIM.paper,
                "protocol": (f"benchmark {AB_FILE} run {run_id} / {setting['device_name'] or setting['device']} / "
                             f"{setting['threads']} thread(s) / {setting['precision']}"),
                "training": "", "context": "; ".join(f"{k}={v}" for k, v in setting.items() if v),
                "run_ids_a": run_id, "run_ids_b": run_id,
            })  # fmt: skip
    return rows


def _paired(a: list[float], b: list[float]) -> tuple[float, float, float, float, float]:
    mean_a, mean_b = math.fsum(a) / len(a), math.fsum(b) / len(b)
    d = [x - y for x, y in zip(a, b, strict=True)]
    diff = math.fsum(d) / len(d)
    if len(d) < 2:
        return mean_a, mean_b, diff, math.nan, math.nan
    from scipy import stats

    se = math.sqrt(math.fsum((x - diff) ** 2 for x in d) / (len(d) - 1) / len(d))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, len(d) - 1)) * se
    return mean_a, mean_b, diff, diff - half, diff + half


def claims_table(collection: Collection, benchmarks: Path | None = None) -> pd.DataFrame:
    import pandas as pd

    rows = [row for claim in CLAIMS for row in claim_rows(claim, collection)]
    rows += benchmark_claim_rows(benchmarks)
    return pd.DataFrame([{c: row.get(c, "") for c in COLUMNS} for row in rows], columns=list(COLUMNS), dtype=str)


def claims_markdown(frame: pd.DataFrame) -> str:
    """The README section: one line per row, the columns a reader decides by."""
    shown = ("claim", "paper_table", "metric", "arm_a", "arm_b", "n_a", "n_b", "mean_a", "mean_b", "diff",
             "ci_low", "ci_high", "verdict", "paper")
    lines = [
        "## Claims of the paper",
        "",
        "Each claim compares two arms of our runs (`a`: the paper's choice, `b`: what it is said to beat) under one "
        "protocol, training length and setting; `diff` = mean_a - mean_b with Welch's 95% t-interval over seeds. "
        f"`supports`/`contradicts`: the interval excludes 0 on the paper's side / the other side; `undecided` "
        f"otherwise, and always with fewer than {MIN_SEEDS} seeds per arm. B.2 rows from "
        "`benchmarks/results/supervision_ab.csv` pair the arms within each interleaved repeat instead, and a "
        "quick check (under 10 repeats) is never decided. Data and method per row: "
        "[`claims.csv`](claims.csv).",
        "",
        "| " + " | ".join(shown) + " |",
        "|" + "|".join("---" for _ in shown) + "|",
    ]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(row[c]).replace("|", "\\|") for c in shown) + " |")
    return "\n".join(lines)
