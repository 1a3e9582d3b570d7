"""What one run record contributes to one table: rows of numbers, each under one protocol.

A record's metrics need not share a protocol: an evaluation may report ``rfid`` on the
Inception graph and ``rfid@standin-randconv-v1`` on a stand-in extractor, next to a PSNR
that has no extractor at all. Each measurement joins every row of the same record whose
protocol it agrees with (a field missing on either side agrees with anything) and that does
not hold that metric yet; otherwise it starts a row of its own. So the PSNR sits next to both
rFIDs, while the two rFIDs never share a row, a column group or a ranking.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import attrs

from glotok_bench.leaderboard.tables import IGNORED_LABELS, LABEL_ALIASES, MetricSpec, TableSpec
from glotok_bench.records import RecordError


@attrs.frozen
class Measurement:
    column: str
    value: float
    protocol: dict[str, str]  # the table's protocol fields; "" where the record says nothing
    repeat_std: float | None = None
    text: str | None = None  # the published spelling, for paper numbers


@attrs.define
class Row:
    """One record's (or one published line's) numbers under one protocol."""

    protocol: dict[str, str]
    metrics: dict[str, Measurement] = attrs.field(factory=dict)

    def accepts(self, m: Measurement) -> bool:
        if m.column in self.metrics:
            return False
        return all(not a or not b or a == b for a, b in ((self.protocol[f], v) for f, v in m.protocol.items()))

    def add(self, m: Measurement) -> None:
        self.metrics[m.column] = m
        for field, value in m.protocol.items():
            self.protocol[field] = self.protocol[field] or value


def label_text(value: Any) -> str:
    """One spelling per label value, so 0.01, 0.010 and 1e-2 group together."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, (int, str)):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def canonical_labels(labels: Mapping[str, Any]) -> dict[str, str]:
    """Labels under their leaderboard names (aliases resolved), values as text.

    A label under the plain name wins over an alias unless it is empty."""
    out = {key: label_text(value) for key, value in labels.items()}
    for name, aliases in LABEL_ALIASES.items():
        for alias in aliases:
            if alias in out:
                value = out.pop(alias)
                if not out.get(name):
                    out[name] = value
    return out


def other_labels(spec: TableSpec, labels: Mapping[str, str]) -> str:
    """Labels that are not key columns: they still tell variants apart, so they are shown."""
    rest = {k: v for k, v in labels.items() if k not in spec.keys and k not in IGNORED_LABELS}
    return "; ".join(f"{k}={v}" for k, v in sorted(rest.items()))


def training_text(record: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """How long the tokenizer trained: rows trained for different lengths never average."""
    train = (record.get("results") or {}).get("train")
    steps = train.get("steps") if isinstance(train, dict) else None
    if steps is None:
        steps = labels.get("steps") or None
    return f"{label_text(steps)} steps" if steps is not None else ""


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(f"{where}: value {value!r} is not a number")
    return float(value)


def _lookup(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _protocol(spec: TableSpec, raw: Mapping[str, Any], extractor: str) -> dict[str, str]:
    protocol = {}
    for field in spec.protocol_fields:
        if field == "data_sha":
            digest = raw.get("manifest_sha256") or raw.get("files_sha256") or ""
            value = str(digest)[:12]
        elif field == "extractor":
            value = raw.get("extractor") or extractor
        elif field == "reference":
            # Computed or cached statistics are of the protocol's own data (already in the
            # key); only an external file (e.g. ADM's) is a different reference.
            external = raw.get("reference") == "external"
            value = raw.get("reference_file") if external else "dataset"
        else:
            value = raw.get(field)
        protocol[field] = label_text(value)
    return protocol


def _metric_measurements(spec: TableSpec, m: MetricSpec, metrics: Mapping[str, Any], path: str) -> list[Measurement]:
    """Every entry of ``metrics`` that is ``m`` (under any extractor), with its repeat spread."""
    found: dict[str, tuple[float, dict[str, str], float | None]] = {}
    companions: dict[str, float] = {}
    for key in sorted(metrics):
        name, _, key_extractor = key.partition("@")
        is_companion = name.endswith("_std") and name[: -len("_std")] in m.keys
        if name not in m.keys and not is_companion:
            continue
        entry = metrics[key]
        where = f"{path}: metric {key!r}"
        if not isinstance(entry, dict) or "value" not in entry:
            raise RecordError(f"{where} is not a {{'value': ..., 'protocol': {{...}}}} entry")
        raw = entry.get("protocol") or {}
        if not isinstance(raw, dict):
            raise RecordError(f"{where}: protocol is not a mapping")
        if key_extractor and raw.get("extractor") and raw["extractor"] != key_extractor:
            # A key that names one extractor and a protocol that names another means the
            # writer mixed them up; ranking either reading could be wrong.
            raise RecordError(f"{where}: named for extractor {key_extractor!r} but measured with {raw['extractor']!r}")
        value = _number(entry["value"], where)
        if not math.isfinite(value):
            continue  # a NaN FID is no measurement; the row shows it as missing
        if is_companion:
            companions[key_extractor or raw.get("extractor") or ""] = value
            continue
        spread = entry.get("std")
        spread = _number(spread, f"{where} std") if spread is not None else None
        protocol = _protocol(spec, raw, key_extractor)
        found[key] = (value * m.scale, protocol, spread)
    out = []
    for _key, (value, protocol, spread) in sorted(found.items()):
        if spread is None:
            spread = companions.get(protocol.get("extractor", ""))
        out.append(Measurement(m.column, value, protocol, spread if m.repeat_std else None))
    return out


def _train_measurements(spec: TableSpec, m: MetricSpec, record: Mapping[str, Any], path: str) -> list[Measurement]:
    train = (record.get("results") or {}).get("train")
    if not isinstance(train, dict) or train.get(m.keys[0]) is None:
        return []
    value = _number(train[m.keys[0]], f"{path}: results.train.{m.keys[0]}")
    config = record.get("config") or {}
    raw = {
        "device": train.get("device"),
        "resolution": train.get("resolution") or _lookup(config, "tokenizer.resolution") or _lookup(config, "data.resolution"),
        "batch_size": train.get("batch_size") or _lookup(config, "train.batch_size"),
    }
    return [Measurement(m.column, value * m.scale, _protocol(spec, raw, ""))]


def assemble(spec: TableSpec, measurements: list[Measurement]) -> list[Row]:
    """Group measurements into rows; the ranking metric goes first so it anchors the rows."""
    order = {m.column: i for i, m in enumerate(sorted(spec.metrics, key=lambda m: m.column != spec.rank_by))}
    rows: list[Row] = []
    for m in sorted(measurements, key=lambda m: (order[m.column], sorted(m.protocol.items()))):
        homes = [row for row in rows if row.accepts(m)]
        if not homes:
            homes = [Row({field: "" for field in spec.protocol_fields})]
            rows.append(homes[0])
        for row in homes:
            row.add(m)
    return rows


def record_rows(spec: TableSpec, record: Mapping[str, Any], path: str) -> list[Row]:
    """The rows ``record`` adds to ``spec`` (none if it lacks the table's metrics or axes)."""
    metrics = record.get("metrics")
    if not isinstance(metrics, dict):
        raise RecordError(f"{path}: 'metrics' is not a mapping")
    measurements = []
    for m in spec.metrics:
        if m.source == "train":
            measurements += _train_measurements(spec, m, record, path)
        else:
            measurements += _metric_measurements(spec, m, metrics, path)
    return assemble(spec, measurements)


@attrs.frozen
class Contribution:
    """A row before aggregation: its identity and one source's numbers."""

    source: str  # "measured" | "paper"
    keys: dict[str, str]  # the table's key columns
    training: str
    other_labels: str
    row: Row
    run_id: str = ""
    citation: str = ""
    note: str = ""
    # Every label of the run under its leaderboard name (claims.csv pairs arms on them).
    labels: dict[str, str] = attrs.field(factory=dict)


def sample_key(contribution: Contribution, index: int) -> str:
    """Which independent sample a run is within its variant: its seed. Two runs of one variant
    with the same seed (the same cell under two grids, a rerun under a new config id) are
    one sample, not two seeds. A run without a seed label is a sample of its own (``index``
    tells apart contributions without a run id, such as paper rows)."""
    seed = contribution.labels.get("seed", "")
    return f"seed={seed}" if seed != "" else f"run={contribution.run_id or index}"


def record_contributions(spec: TableSpec, record: Mapping[str, Any], path: str) -> list[Contribution]:
    """What an ``ok`` record adds to ``spec``; raises RecordError if it is malformed."""
    labels = record.get("labels") or {}
    if not isinstance(labels, dict):
        raise RecordError(f"{path}: 'labels' is not a mapping")
    labels = canonical_labels(labels)
    rows = record_rows(spec, record, path)
    if not rows or any(not labels.get(axis) for axis in spec.requires):
        return []
    keys = {k: labels.get(k, "") for k in spec.keys}
    training = training_text(record, labels)
    rest = other_labels(spec, labels)
    return [Contribution("measured", keys, training, rest, row, run_id=str(record["run_id"]), labels=labels)
            for row in rows]
