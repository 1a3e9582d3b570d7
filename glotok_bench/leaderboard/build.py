"""Records -> DataFrames -> CSV, markdown and PNG files in leaderboards/.

``regenerate`` renders every file in memory first and writes them only when all of them
rendered, each through a temp file and a rename (``atomic_write_bytes``). A failure while
building therefore leaves every old file as it was, and an interrupted write leaves each file
either old or new, never half written.

Output is a pure function of the records and the paper's numbers: rows sorted on every
column, floats printed with 4 significant digits, paths relative to the records folder, no
timestamps, and PNGs saved without the metadata that changes between matplotlib runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from glotok_bench.atomic import atomic_write_bytes
from glotok_bench.leaderboard import render
from glotok_bench.leaderboard.claims import claims_table
from glotok_bench.leaderboard.collect import Collection, collect
from glotok_bench.leaderboard.extract import Contribution, sample_key
from glotok_bench.leaderboard.paper import paper_contributions
from glotok_bench.leaderboard.tables import TABLES, TableSpec, extractor_column

if TYPE_CHECKING:
    import pandas as pd

SIGNIFICANT = 4
SOURCES = ("paper", "measured")  # group order: the published reference first


def format_number(value: Any) -> str:
    """4 significant digits in plain notation (never 1.2e-05), "" for a missing value."""
    if value is None:
        return ""
    value = float(value)
    if not math.isfinite(value):
        return ""
    if value == 0:
        return "0"
    decimals = SIGNIFICANT - 1 - math.floor(math.log10(abs(value)))
    if decimals > 0:
        return f"{value:.{decimals}f}"
    return f"{round(value, decimals):.0f}"


def protocol_label(spec: TableSpec, protocol: dict[str, str]) -> str:
    """A short name for a protocol, e.g. ``imagenet-1k / val / n=50000 / 256px / inception-v3``.

    It names every protocol field, so two rows with the same label were measured the same way.
    Unknown core fields print as "?" rather than vanishing.
    """
    parts = []
    for field in spec.protocol_fields:
        value = protocol.get(field, "")
        if field == "data_sha":
            if value:
                parts[-1] += f"#{value}"
        elif field in ("dataset", "split", "extractor", "device"):
            parts.append(value or f"{field}?")
        elif field == "count":
            parts.append(f"n={value or '?'}")
        elif field == "resolution":
            parts.append(f"{value or '?'}px")
        elif value:
            parts.append(f"{field}={value}")
    return " / ".join(parts)


def _identity(spec: TableSpec) -> list[str]:
    protocol_only = [f for f in spec.protocol_fields if f not in spec.keys]
    return ["source", "protocol", *spec.keys, "training", "other_labels", *protocol_only, "citation", "note"]


def _identity_of(spec: TableSpec, c: Contribution) -> dict[str, str]:
    return {
        "source": c.source,
        "protocol": protocol_label(spec, c.row.protocol),
        **c.keys,
        "training": c.training,
        "other_labels": c.other_labels,
        **{f: v for f, v in c.row.protocol.items() if f not in spec.keys},
        "citation": c.citation,
        "note": c.note,
    }


def aggregate(spec: TableSpec, contributions: list[Contribution]) -> pd.DataFrame:
    """Seeds of the same variant under the same protocol -> mean, std and n; then ranks.

    Metric columns are floats here; the published spelling of paper numbers rides along in
    ``text:<metric>`` columns.
    """
    import pandas as pd

    if not contributions:
        return pd.DataFrame()
    # Rows are grouped on one integer id per distinct identity rather than on its ~25
    # columns: same grouping, a fraction of the pandas work.
    identities: dict[tuple[tuple[str, str], ...], int] = {}
    lines = []
    for index, c in enumerate(contributions):
        identity = tuple(_identity_of(spec, c).items())
        row_id = identities.setdefault(identity, len(identities))
        for m in c.row.metrics.values():
            repeat_std = math.nan if m.repeat_std is None else m.repeat_std
            lines.append({"row": row_id, "run_id": c.run_id, "sample": sample_key(c, index), "metric": m.column,
                          "value": m.value, "repeat_std": repeat_std, "text": m.text})  # fmt: skip
    # Values sorted inside each group, so means and spreads do not depend on the order
    # the records were read in (float addition is not associative).
    long = pd.DataFrame(lines).sort_values("value", kind="stable")
    # Runs of one sample (the same seed) are averaged first: n counts seeds, not records.
    samples = long.groupby(["row", "metric", "sample"], sort=True).agg(
        value=("value", "mean"), repeat_std=("repeat_std", "mean"), text=("text", "first"),
    ).reset_index().sort_values("value", kind="stable")
    stats = samples.groupby(["row", "metric"], sort=True).agg(
        value=("value", "mean"), std=("value", "std"), count=("value", "count"),
        repeat_std=("repeat_std", "mean"), text=("text", "first"),
    )
    runs = long.groupby("row", sort=True)["run_id"].agg(lambda s: sorted(set(s) - {""}))
    sample_counts = long.groupby("row", sort=True)["sample"].nunique()
    rows = [dict(identity) for identity in identities]
    for (row_id, column), line in zip(stats.index, stats.to_dict("records"), strict=True):
        row = rows[row_id]
        row[column] = line["value"]
        row[f"{column}_std"] = line["std"]
        row[f"{column}_ci95"] = t_half_width(line["std"], int(line["count"]))
        row[f"{column}_repeat_std"] = line["repeat_std"]
        row[f"text:{column}"] = line["text"]
    for row_id, row in enumerate(rows):
        run_ids = runs[row_id]
        row["n"] = int(sample_counts[row_id]) if row["source"] == "measured" else math.nan
        row["run_ids"] = " ".join(run_ids)
    frame = pd.DataFrame(_sorted(spec, rows))
    for m in spec.metrics:
        for column in (m.column, f"{m.column}_std", f"{m.column}_ci95", f"{m.column}_repeat_std", f"text:{m.column}"):
            if column not in frame:
                frame[column] = "" if column.startswith("text:") else math.nan
    ranked = spec.metric[spec.rank_by]
    frame["rank"] = frame.groupby(["source", "protocol"], sort=False)[spec.rank_by].rank(
        method="min", ascending=ranked.lower_is_better
    )
    return frame


def t_half_width(std: float, n: int, level: float = 0.95) -> float:
    """Half-width of the t-interval of a mean of ``n`` values with sample std ``std``
    (NaN below 2 values: one run says nothing about its spread)."""
    if n < 2 or std is None or not math.isfinite(std):
        return math.nan
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n))


def _natural(value: Any) -> tuple:
    """Sort key: numbers numerically, then text, then blanks."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return (2, 0.0, "")
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _sorted(spec: TableSpec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Groups in (source, protocol) order; inside a group by the table's order columns, then
    by every other column, so equal-looking rows still come out in one fixed order."""
    columns = sorted({c for row in rows for c in row} - {"source", "protocol", *spec.order})
    rank = spec.metric[spec.rank_by]

    def key(row: dict[str, Any]) -> tuple:
        # "rank" is not computed yet; the ranking metric orders the same way.
        ranking = row.get(spec.rank_by, math.nan)
        if not rank.lower_is_better and isinstance(ranking, float):
            ranking = -ranking
        order = [_natural(ranking) if c == "rank" else _natural(row.get(c)) for c in spec.order]
        return (SOURCES.index(row["source"]), row["protocol"], *order, *(_natural(row.get(c)) for c in columns))

    return sorted(rows, key=key)


_SUFFIXES = ("", "_std", "_ci95", "_repeat_std")


def _extractors(frame: pd.DataFrame, column: str) -> list[str]:
    """Extractors of the rows that have a value in ``column``: the Inception graph first."""
    if frame.empty or "extractor" not in frame:
        return []
    present = {e for e, v in zip(frame["extractor"], frame[column], strict=True) if not _missing(v)}
    return sorted(present, key=lambda e: (extractor_column(column, e) != column, e))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _header(spec: TableSpec, frame: pd.DataFrame) -> list[str]:
    """``spec.columns()``, with a per-extractor metric's column group repeated under the
    name of every extractor that measured it (``rfid``, ``rfid@standin-randconv-v1``)."""
    header = []
    for column in spec.columns():
        found = [(m, suffix) for m in spec.metrics for suffix in _SUFFIXES if column == m.column + suffix]
        extractors = _extractors(frame, found[0][0].column) if found and found[0][0].per_extractor else []
        if not extractors:
            header.append(column)
            continue
        m, suffix = found[0]
        header += [extractor_column(m.column, e) + suffix for e in extractors]
    return header


def format_table(spec: TableSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """The CSV's text: published numbers as printed, ours with 4 significant digits.

    A per-extractor metric's numbers land in the columns named after the row's extractor
    and are blank in the others."""
    import pandas as pd

    header = _header(spec, frame)
    if frame.empty:
        return pd.DataFrame({column: pd.Series(dtype=str) for column in header})
    out: dict[str, list[str]] = {column: [""] * len(frame) for column in header}
    metric_columns = set(spec.metric_columns())
    extractors = list(frame["extractor"]) if "extractor" in frame else [""] * len(frame)
    for m in spec.metrics:
        texts = frame[f"text:{m.column}"]
        values = [
            text if source == "paper" and isinstance(text, str) and text else format_number(value)
            for source, text, value in zip(frame["source"], texts, frame[m.column], strict=True)
        ]
        for suffix in _SUFFIXES:
            if m.column + suffix not in metric_columns:
                continue
            cells = values if not suffix else [format_number(v) for v in frame[m.column + suffix]]
            for i, (extractor, value, text) in enumerate(zip(extractors, frame[m.column], cells, strict=True)):
                if m.per_extractor and _missing(value):
                    continue
                name = extractor_column(m.column, extractor) if m.per_extractor else m.column
                out[name + suffix][i] = text
    for column in spec.columns():
        if column in metric_columns:
            continue
        if column in ("rank", "n"):
            out[column] = ["" if pd.isna(v) else str(int(v)) for v in frame[column]]
        elif column in frame:
            out[column] = ["" if pd.isna(v) else str(v) for v in frame[column]]
    return pd.DataFrame(out, dtype=str)


def csv_bytes(table: pd.DataFrame) -> bytes:
    return table.to_csv(index=False, lineterminator="\n").encode("utf-8")


@attrs.frozen
class Outcome:
    collection: Collection
    tables: dict[str, pd.DataFrame]  # formatted, as written
    written: list[Path]


CLAIMS_FILE = "claims.csv"
# Fresh runs, plus the committed records behind the committed CPU-scale results.
DEFAULT_RECORDS = ("runs", "leaderboards/records")


def regenerate(
    records: str | Path | Sequence[str | Path] = DEFAULT_RECORDS, out: str | Path = "leaderboards",
    benchmarks: str | Path | None = None,
) -> Outcome:
    """Rebuild every leaderboard file in ``out`` from the records under ``records`` (and,
    for claims.csv's B.2 rows, the benchmark results folder ``benchmarks``)."""
    collection = collect(records)
    tables = {}
    for spec in TABLES:
        frame = aggregate(spec, paper_contributions(spec) + collection.contributions[spec.name])
        tables[spec.name] = format_table(spec, frame)
    files: dict[str, bytes] = {f"{name}.csv": csv_bytes(table) for name, table in tables.items()}
    claims = claims_table(collection, None if benchmarks is None else Path(benchmarks))
    files[CLAIMS_FILE] = csv_bytes(claims)
    for name, render_plot in render.PLOTS.items():
        files[name] = render_plot(tables)
    files["README.md"] = render.readme(tables, collection, plots=list(render.PLOTS), claims=claims).encode("utf-8")
    out = Path(out)
    written = [atomic_write_bytes(out / name, data) for name, data in sorted(files.items())]
    return Outcome(collection, tables, written)


