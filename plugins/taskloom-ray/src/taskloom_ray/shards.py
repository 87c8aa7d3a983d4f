"""A sharded run's layout on disk: which rows each shard holds, and where its part lands.

    <run>/run.json                       the run folder's owner (as for a local run)
    <run>/shards/00003/                  shard 3's own local run folder: its SQLite cache, its
                                         part files until they are published
    <run>/data/<leaf>/part-00003.jsonl   shard 3's rows of leaf step <leaf>, published by rename
    <run>/data/_manifests/part-00003.json  what shard 3 made: rows, columns, cache hits, requests
    <run>/data/_SUCCESS                  written last, when every shard is published

Everything here is deterministic: shard ``i`` is always rows ``[i * size, (i + 1) * size)`` of
the source, and its files always have the same names, so a rerun replaces what it redoes and
never adds a second copy of a row. A shard counts as finished once its manifest exists; the
manifest is written after every part is renamed into place, so a shard killed half-way is
simply run again (from its cache). Readers of ``data/<leaf>/`` (``datasets``, pyarrow,
``ray.data``) see only part files: the manifests and the marker sit beside the leaf folders, under
names that start with ``_``, which those readers skip.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from taskloom.plugin import Row, Source, TaskloomError

SHARDS_DIR = "shards"
DATA_DIR = "data"
MANIFESTS_DIR = "_manifests"
SUCCESS_FILENAME = "_SUCCESS"


class ShardError(TaskloomError):
    """A shard could not be run or published; the message names the shard and what to do."""


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, stop)`` of the source, the ``index``-th part of the run."""

    index: int
    start: int
    stop: int

    @property
    def label(self) -> str:
        return f"{self.index:05d}"

    def __str__(self) -> str:
        return f"shard {self.index} (rows {self.start}-{self.stop - 1})"


def plan_shards(total: int, size: int) -> list[Shard]:
    """``total`` rows cut into shards of ``size`` rows (the last one shorter)."""
    return [Shard(i, start, min(start + size, total)) for i, start in enumerate(range(0, total, size))]


class ShardSource(Source):
    """Rows ``[start, stop)`` of another source: what one shard reads, on whichever node runs it."""

    source: Source
    start: int = Field(ge=0)
    stop: int = Field(ge=0)

    def rows(self) -> Iterator[Row]:
        return self.source.rows_between(self.start, self.stop)

    def count(self) -> int | None:
        return self.stop - self.start

    def describe(self) -> str:
        return f"rows {self.start}-{self.stop - 1} of {self.source.describe()}"


@dataclass(frozen=True)
class Layout:
    """The paths of one sharded run folder."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / DATA_DIR

    @property
    def shards(self) -> Path:
        return self.root / SHARDS_DIR

    @property
    def success(self) -> Path:
        return self.data / SUCCESS_FILENAME

    def shard_dir(self, shard: Shard) -> Path:
        return self.shards / shard.label

    def part(self, leaf: str, shard: Shard, suffix: str) -> Path:
        return self.data / leaf / f"part-{shard.label}{suffix}"

    def manifest(self, shard: Shard) -> Path:
        return self.data / MANIFESTS_DIR / f"part-{shard.label}.json"

    def finished(self, shard: Shard) -> dict[str, Any] | None:
        """The manifest of a shard published earlier with the same rows, or None."""
        data = self.read_manifest(self.manifest(shard))
        if data is None or (data.get("start"), data.get("stop")) != (shard.start, shard.stop):
            return None  # written for other rows: run this shard again
        return data

    @staticmethod
    def read_manifest(path: Path) -> dict[str, Any] | None:
        """A manifest's content; None for one that is missing or unreadable (its shard runs again)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def leaf_files(self, leaf: str, suffix: str) -> list[Path]:
        """A leaf's published parts of one kind, in row order."""
        return sorted((self.data / leaf).glob(f"part-*{suffix}"))


def write_json(path: Path, content: Mapping[str, Any]) -> None:
    """``content`` at ``path``, whole or not at all: written beside it, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(dict(content), handle, indent=2, ensure_ascii=False, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def publish(layout: Layout, shard: Shard, made: Mapping[str, list[Path]]) -> dict[str, str]:
    """Rename each file a shard's sinks wrote into its part name; ``{leaf/suffix: part}`` relative to the run."""
    published: dict[str, str] = {}
    for leaf, paths in made.items():
        for path in paths:
            suffix = "".join(path.suffixes) or ".out"
            target = layout.part(leaf, shard, suffix)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(path, target)  # atomic: a reader sees the old part or the new one, never half
            except OSError as error:
                raise ShardError(
                    f"{shard}: could not move {path} to {target} ({error}). The run folder must be one file "
                    "system that every node writes to (a shared mount); see the taskloom-ray docs."
                ) from error
            published[f"{leaf}{suffix}"] = str(target.relative_to(layout.root))
    return published
