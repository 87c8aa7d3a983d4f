"""What a run folder's generation caches hold: every answer the folder paid for, over every run.

``run.json`` says what the last run did, and a resumed run's record counts only what it asked
for itself. The cache is the folder's memory across runs: each generation it holds was paid for
once, when it was written. So the report reads it for the folder's whole story: how many
generations, how many tokens, and when they arrived (a stopped and resumed run shows as a gap).

Only aggregates are asked of SQLite (counts, sums and per-interval counts of the ``created``
column), so a cache of millions of generations costs a few queries and no rows in memory. A run
on Ray keeps one cache per shard (``shards/*/cache.sqlite``, under ``phases/`` too); all are
read. Each file is opened read-only, and a cache that cannot be read is named on the page rather
than failing the report: the report describes the data and must never cost it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from taskloom.plugin import CACHE_FILENAME

BUCKETS = 80
"""Intervals of the arrivals chart: fine enough to see a pause, few enough to stay small."""


@dataclass
class CacheSummary:
    """Totals over every cache of a run folder, and when their generations were written."""

    files: int = 0
    generations: int = 0
    empty: int = 0
    """Generations the provider finished without text (a refusal, a content filter)."""
    input_tokens: int = 0
    output_tokens: int = 0
    first: float | None = None
    last: float | None = None
    width: float = 1.0
    """Seconds per interval of :attr:`arrivals`."""
    arrivals: Counter[int] = field(default_factory=Counter)
    """Generations written per interval, by the interval's start in seconds after :attr:`first`."""
    unreadable: list[str] = field(default_factory=list)
    """Cache files that could not be read, with why."""


def cache_files(run_dir: Path) -> list[Path]:
    """The folder's own cache, and those of its Ray shards and phases."""
    found = [run_dir / CACHE_FILENAME] if (run_dir / CACHE_FILENAME).is_file() else []
    for pattern in (f"shards/*/{CACHE_FILENAME}", f"phases/*/shards/*/{CACHE_FILENAME}"):
        found.extend(sorted(run_dir.glob(pattern)))
    return found


def _connect(path: Path) -> contextlib.closing[sqlite3.Connection]:
    # mode=ro: the report never writes a cache, not even the WAL's checkpoint of a cleanly closed file.
    return contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5))


def read_caches(run_dir: Path) -> CacheSummary:
    """Sum every cache of ``run_dir``; two queries per file, nothing held per generation."""
    summary = CacheSummary()
    readable: list[Path] = []
    for path in cache_files(run_dir):
        try:
            with _connect(path) as db:
                count, empty, tokens_in, tokens_out, first, last = db.execute(
                    "SELECT COUNT(*), SUM(text IS NULL), SUM(input_tokens), SUM(output_tokens), "
                    "MIN(created), MAX(created) FROM generations"
                ).fetchone()
        except sqlite3.Error as error:
            summary.unreadable.append(f"{path.relative_to(run_dir)}: {error}")
            continue
        summary.files += 1
        readable.append(path)
        summary.generations += count or 0
        summary.empty += empty or 0
        summary.input_tokens += tokens_in or 0
        summary.output_tokens += tokens_out or 0
        if first is not None:
            summary.first = first if summary.first is None else min(summary.first, first)
            summary.last = last if summary.last is None else max(summary.last, last)
    if summary.first is None or summary.last is None:
        return summary
    summary.width = max(1.0, (summary.last - summary.first) / BUCKETS)
    for path in readable:
        try:
            with _connect(path) as db:
                for bucket, count in db.execute(
                    "SELECT CAST((created - ?) / ? AS INTEGER), COUNT(*) FROM generations GROUP BY 1",
                    (summary.first, summary.width),
                ):
                    summary.arrivals[int(bucket)] += count
        except sqlite3.Error as error:  # pragma: no cover - it answered the query before
            summary.unreadable.append(f"{path.relative_to(run_dir)}: {error}")
    return summary
