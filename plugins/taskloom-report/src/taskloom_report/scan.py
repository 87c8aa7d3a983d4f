"""One pass over a run folder's outputs: what the report shows, without holding every row.

A run may hold millions of rows, so the rows are streamed once, leaf file by leaf file. On the
way each row adds to small counters (its status, the output lengths of each generating task, the
failures by message) and may enter a bounded reservoir sample for the row table. The sample is
seeded, so the same folder always gives the same page.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from taskloom.plugin import TaskloomError

METADATA = "distilabel_metadata"
STATUSES = ("ok", "unreadable", "failed")
_SKIPPED_NAMES = frozenset({"README.md", "run.json"})


@dataclass
class FailureGroup:
    """Failures whose messages differ only in numbers and ids: one cause, counted once."""

    message: str
    count: int = 0
    steps: Counter[str] = field(default_factory=Counter)
    example: dict[str, Any] | None = None


class Sampled(NamedTuple):
    """A row kept for the table, with what the pass already found of it."""

    number: int
    leaf: str
    row: dict[str, Any]
    statuses: dict[str, str]
    """Each task's status on the row (:func:`task_statuses`)."""


@dataclass
class Scan:
    """What the pass over the rows found."""

    rows: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    """Rows by their status (the worst of their tasks')."""
    by_task: dict[str, Counter[str]] = field(default_factory=dict)
    """Each task's statuses over the rows it left something in."""
    output_tokens: dict[str, list[int]] = field(default_factory=dict)
    """Output tokens of every generation, by task; ints are small, so even 10^6 of them fit."""
    failures: dict[str, FailureGroup] = field(default_factory=dict)
    sample: list[Sampled] = field(default_factory=list)
    """The rows kept for the table, in row order."""
    leaves: list[str] = field(default_factory=list)


def leaf_files(run_dir: Path) -> dict[str, list[Path]]:
    """A run folder's outputs by leaf, in row order; JSONL where a leaf has it, else Parquet.

    A local run writes ``<leaf>.jsonl`` (or ``.parquet``); a run on Ray writes a part per shard
    under ``data/<leaf>/part-NNNNN.*``, whose names sort in source order.
    """
    found: dict[str, list[Path]] = {}
    for suffix in (".jsonl", ".parquet"):
        for path in sorted(run_dir.glob(f"*{suffix}")):
            if path.is_file() and path.name not in _SKIPPED_NAMES:
                found.setdefault(path.stem, [path])
        for folder in (run_dir, run_dir / "data"):
            for leaf in sorted(p for p in folder.glob("*") if p.is_dir() and not p.name.startswith("_")):
                parts = sorted(leaf.glob(f"part-*{suffix}"))
                if parts:
                    found.setdefault(leaf.name, parts)
    return found


def _stream(paths: list[Path]) -> Iterator[dict[str, Any]]:
    for path in paths:
        if path.suffix == ".parquet":
            yield from _parquet_rows(path)
            continue
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    value = json.loads(line)
                    if isinstance(value, dict):
                        yield value


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    """A Parquet file's rows, a batch at a time (pyarrow comes with taskloom's ``parquet`` extra)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise TaskloomError(
            f"{path} is Parquet, which the report reads with pyarrow: pip install 'taskloom[parquet]'."
        ) from None
    for batch in pq.ParquetFile(path).iter_batches(batch_size=2048):
        yield from batch.to_pylist()


_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{8,}\b|\d+(\.\d+)?")
_QUOTED = re.compile(r"'[^']{16,}'|\"[^\"]{16,}\"")


def normalise(message: str) -> str:
    """An error message with its numbers, hex ids and long quoted values replaced, to group by."""
    first = message.strip().splitlines()[0] if message.strip() else "(no message)"
    return _QUOTED.sub("'…'", _NUMBERS.sub("N", first))[:300]


def _flat(value: Any) -> list[Any]:
    return [item for sub in value for item in _flat(sub)] if isinstance(value, list) else [value]


def tasks_of(meta: dict[str, Any]) -> set[str]:
    """The names of the tasks that left something in a row's metadata."""
    names = set()
    for key in meta:
        for prefix in ("raw_output_", "statistics_", "error_"):
            if key.startswith(prefix):
                names.add(key[len(prefix) :])
    return names


def task_statuses(row: dict[str, Any], outputs: Mapping[str, Sequence[str]] | None = None) -> dict[str, str]:
    """Each task's status on a row: ``failed`` if it recorded an error, ``unreadable`` if it kept
    a reply it could not parse, else ``ok``; only tasks that left something in the row's metadata.

    ``outputs`` gives each task's output columns (``run.json`` records them): a task's reply is
    unparsed when its raw output is there and every one of its columns is None, which is what a
    task writes when ``format_output`` cannot read the reply (per generation, for a task that
    groups its generations). A folder written before the columns were recorded has none to give;
    the status then falls back to a guess: a raw output kept and some column of the row None.
    """
    meta = row.get(METADATA)
    if not isinstance(meta, dict):
        return {}
    statuses = {}
    for task in sorted(tasks_of(meta)):
        raw = meta.get(f"raw_output_{task}")
        if any(_flat(meta.get(f"error_{task}"))):
            statuses[task] = "failed"
        elif not any(v is not None for v in _flat(raw)):
            statuses[task] = "ok"  # no reply to read: nothing unparsed (a refusal is the judge's own count)
        elif outputs is None:
            guessed = any(value is None for name, value in row.items() if name != METADATA)
            statuses[task] = "unreadable" if guessed else "ok"
        else:
            columns = [c for c in outputs.get(task, ()) if c in row]
            statuses[task] = "unreadable" if columns and _unparsed(row, columns, raw) else "ok"
    return statuses


def worst(statuses: Mapping[str, str]) -> str:
    """A row's status from its tasks': failed before unreadable before ok."""
    values = set(statuses.values())
    return next((status for status in reversed(STATUSES) if status in values), "ok")


def row_status(row: dict[str, Any], outputs: Mapping[str, Sequence[str]] | None = None) -> str:
    """The row's status: the worst of its tasks' (:func:`task_statuses`)."""
    return worst(task_statuses(row, outputs))


def _unparsed(row: dict[str, Any], columns: list[str], raw: Any) -> bool:
    """Whether some generation of a task has a raw output and only None in every output column."""
    values = [row[c] for c in columns]
    grouped = isinstance(raw, list) and all(isinstance(v, list) and len(v) == len(raw) for v in values)
    if not grouped:
        return all(all(item is None for item in _flat(v)) for v in values)
    return any(
        answer is not None and all(all(item is None for item in _flat(v[index])) for v in values)
        for index, answer in enumerate(raw)
    )


def scan(run_dir: Path, sample: int = 500, seed: int = 17, outputs: Mapping[str, Sequence[str]] | None = None) -> Scan:
    """Stream every leaf output once and gather what the page shows; keep ``sample`` rows at most.

    ``outputs``: each task's output columns, for :func:`row_status`.
    """
    result = Scan()
    chooser = random.Random(seed)
    files = leaf_files(run_dir)
    result.leaves = list(files)
    reservoir: list[Sampled] = []
    for leaf, paths in files.items():
        for row in _stream(paths):
            number = result.rows
            result.rows += 1
            per_task = task_statuses(row, outputs)
            status = worst(per_task)
            result.statuses[status] += 1
            for task, own in per_task.items():
                result.by_task.setdefault(task, Counter())[own] += 1
            meta = row.get(METADATA)
            if isinstance(meta, dict):
                _count_tokens(result, meta)
                if status == "failed":
                    _count_failures(result, meta, number, leaf, row)
            if len(reservoir) < sample:
                reservoir.append(Sampled(number, leaf, row, per_task))
            else:
                slot = chooser.randrange(number + 1)
                if slot < sample:
                    reservoir[slot] = Sampled(number, leaf, row, per_task)
    result.sample = sorted(reservoir, key=lambda item: item.number)
    return result


def _count_tokens(result: Scan, meta: dict[str, Any]) -> None:
    for key, value in meta.items():
        if not key.startswith("statistics_"):
            continue
        task = key[len("statistics_") :]
        errors = meta.get(f"error_{task}")
        stats = value if isinstance(value, list) else [value]
        failed = errors if isinstance(errors, list) else [errors] * len(stats)
        into = result.output_tokens.setdefault(task, [])
        for index, entry in enumerate(stats):
            if not isinstance(entry, dict) or (index < len(failed) and failed[index]):
                continue
            for tokens in _flat(entry.get("output_tokens")):
                if isinstance(tokens, int):
                    into.append(tokens)


def _count_failures(result: Scan, meta: dict[str, Any], number: int, leaf: str, row: dict[str, Any]) -> None:
    seen: set[str] = set()
    for key, value in meta.items():
        if not key.startswith("error_"):
            continue
        task = key[len("error_") :]
        for message in _flat(value):
            if not message:
                continue
            group_key = normalise(str(message))
            if group_key in seen:  # a grouped row repeats its error per generation: one row, one count
                continue
            seen.add(group_key)
            group = result.failures.get(group_key)
            if group is None:
                group = result.failures[group_key] = FailureGroup(group_key)
            group.count += 1
            group.steps[task] += 1
            if group.example is None:
                group.example = {"row": number, "leaf": leaf, "step": task, "message": str(message)[:2000], "data": row}
