"""The paper's published numbers (paper_numbers.csv), as rows of the leaderboards.

The file has one line per published number, with the table it comes from and the protocol
the paper states for it. Values keep the paper's spelling ("327.50", "1.00") so the
leaderboards show exactly what was printed; "-" entries were not published and have no line.
"""

from __future__ import annotations

import csv
from importlib import resources

from glotok_bench.leaderboard.errors import LeaderboardError
from glotok_bench.leaderboard.extract import Contribution, Measurement, assemble
from glotok_bench.leaderboard.tables import TableSpec

PAPER_FILE = "paper_numbers.csv"
# Columns describing the row; every line of a row must agree on them.
_PER_ROW = ("citation", "note")


def parse_paper_numbers(text: str) -> list[dict[str, str]]:
    """The file's lines as dicts; a line with more or fewer fields than the header (an
    unquoted comma in a note) is an error, not a silently cut or shifted row."""
    lines = list(csv.reader(text.splitlines()))
    header, body = lines[0], lines[1:]
    for number, fields in enumerate(body, start=2):
        if len(fields) != len(header):
            raise LeaderboardError(
                f"{PAPER_FILE} line {number}: {len(fields)} fields under a {len(header)}-field header "
                "(quote a value that holds a comma)"
            )
    return [dict(zip(header, fields, strict=True)) for fields in body]


def read_paper_numbers() -> list[dict[str, str]]:
    text = resources.files("glotok_bench.leaderboard").joinpath(PAPER_FILE).read_text(encoding="utf-8")
    return parse_paper_numbers(text)


def paper_contributions(spec: TableSpec, lines: list[dict[str, str]] | None = None) -> list[Contribution]:
    """The published rows of ``spec``'s paper table, one per printed row."""
    if not spec.paper_table:
        return []
    lines = read_paper_numbers() if lines is None else lines
    columns = set(spec.keys) | {"training", "table"}
    grouped: dict[tuple[tuple[str, str], ...], list[Measurement]] = {}
    described: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    for number, line in enumerate(lines, start=2):
        if line["table"] != spec.paper_table:
            continue
        if line["metric"] not in spec.metric:
            raise LeaderboardError(f"{PAPER_FILE} line {number}: table {spec.name} has no metric {line['metric']!r}")
        try:
            value = float(line["value"])
        except ValueError:
            raise LeaderboardError(f"{PAPER_FILE} line {number}: value {line['value']!r} is not a number") from None
        identity = tuple(sorted((k, v) for k, v in line.items() if k in columns))
        description = {k: line[k] for k in _PER_ROW}
        if described.setdefault(identity, description) != description:
            raise LeaderboardError(f"{PAPER_FILE} line {number}: citation or note differs from the row's other lines")
        protocol = {field: line.get(field, "") for field in spec.protocol_fields}
        grouped.setdefault(identity, []).append(Measurement(line["metric"], value, protocol, text=line["value"]))
    out = []
    for identity, measurements in grouped.items():
        fields = {**dict(identity), **described[identity]}
        rows = assemble(spec, measurements)
        if len(rows) != 1:
            raise LeaderboardError(f"{PAPER_FILE}: table {spec.paper_table} row {fields} repeats a metric or mixes protocols")
        out.append(Contribution(
            "paper",
            keys={k: fields.get(k, "") for k in spec.keys},
            training=fields.get("training", ""),
            other_labels="",
            row=rows[0],
            citation=fields.get("citation", ""),
            note=fields.get("note", ""),
        ))
    return out
