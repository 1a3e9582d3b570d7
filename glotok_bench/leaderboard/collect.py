"""Reading the runs folder: which records feed the leaderboards and which were skipped.

Only ``ok`` records give rows. A record that cannot be read, or whose metrics are malformed,
is reported by path and skipped whole, so one bad file never takes the leaderboards down and
never contributes half its numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs

from glotok_bench.leaderboard.errors import LeaderboardError
from glotok_bench.leaderboard.extract import Contribution, record_contributions
from glotok_bench.leaderboard.tables import TABLES
from glotok_bench.records import RecordError, iter_records
from glotok_bench.store import local_records_folder


@attrs.define
class Collection:
    roots: tuple[Path, ...]
    found: int = 0
    used: int = 0  # ok records that were read (they may feed no table)
    failed: list[Path] = attrs.field(factory=list)
    running: list[Path] = attrs.field(factory=list)
    corrupt: list[tuple[Path, str]] = attrs.field(factory=list)
    duplicates: list[Path] = attrs.field(factory=list)  # same kind and run id as an earlier record
    contributions: dict[str, list[Contribution]] = attrs.field(factory=lambda: {spec.name: [] for spec in TABLES})

    def relative(self, path: Path) -> str:
        """A path as shown in generated files: under its records folder's name, so the
        files do not change with where the checkout lives."""
        for root in self.roots:
            if path.is_relative_to(root):
                return (Path(root.name) / path.relative_to(root)).as_posix()
        return path.as_posix()


def collect(roots: str | Path | Sequence[str | Path]) -> Collection:
    """Records under every existing folder of ``roots`` (e.g. ``runs`` and the committed
    ``leaderboards/records``); at least one must exist, so a typo cannot go unnoticed."""
    roots = (roots,) if isinstance(roots, str | Path) else tuple(roots)
    # A root may be a store URI (s3://bucket/runs); its records are read through the store.
    found = (local_records_folder(root) for root in roots)
    existing = tuple(folder for folder in found if folder is not None)
    if not existing:
        raise LeaderboardError(
            f"no records folder found: {', '.join(map(str, roots))} (pass --records DIR)"
        )
    collection = Collection(existing)
    seen: set[tuple[str, str]] = set()
    records = ((path, record) for root in existing for path, record in iter_records(root))
    for path, record in records:
        collection.found += 1
        if isinstance(record, RecordError):
            collection.corrupt.append((path, str(record)))
            continue
        status = record["status"]
        if status == "failed":
            collection.failed.append(path)
            continue
        if status != "ok":
            collection.running.append(path)
            continue
        # A copied run folder would otherwise count as a second seed of the same run.
        identity = (str(record["kind"]), str(record["run_id"]))
        if identity in seen:
            collection.duplicates.append(path)
            continue
        try:
            added = {spec.name: record_contributions(spec, record, str(path)) for spec in TABLES}
        except RecordError as exc:
            collection.corrupt.append((path, str(exc)))
            continue
        seen.add(identity)
        collection.used += 1
        for name, contributions in added.items():
            collection.contributions[name] += contributions
    return collection
