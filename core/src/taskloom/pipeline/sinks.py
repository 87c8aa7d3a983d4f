"""The built-in sinks: JSON Lines, Parquet and a Hugging Face ``datasets.Dataset``.

JSONL is the sink a run can die in the middle of: every chunk is flushed as it is written, so a
killed run leaves complete lines. The Parquet and Dataset sinks need a schema, which rows built
by LLM steps do not have up front: a column may be ``None`` for a thousand rows and a string
after, or hold metadata dicts whose keys differ from row to row. So both spool rows to a JSONL
file beside their output while the run goes on, and at ``close()`` read it twice: once to infer
one schema that fits every row, once to write the Arrow data in pieces. Memory stays bounded
by one piece, whatever the number of rows.

A column whose values cannot share one Arrow type (numbers in some rows, text in others) is
written as text, with the non-string values JSON-encoded, rather than failing the whole run
at its very end.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import IO, Any, ClassVar

from pydantic import Field, PrivateAttr, field_validator

from taskloom.pipeline.base import Sink, SinkWriter
from taskloom.pipeline.sources import import_optional
from taskloom.typing import Row

PIECE_ROWS = 2048
"""Rows converted at a time when a spool becomes Arrow data."""
PIECE_BYTES = 8 << 20
"""...or fewer, once their JSON text passes this size, for rows with long generations."""


def _json_line(row: Row) -> str:
    return json.dumps(row, ensure_ascii=False, default=str) + "\n"


class _LineWriter(SinkWriter):
    """Appends rows as JSON lines, written out whole, so a killed run leaves only complete lines.

    Lines are gathered and written in one go every ``flush_bytes`` or ``flush_seconds``
    (a system call per row would cost more than the rest of the row's handling); a kill loses
    at most those gathered lines, which the resumed run writes again from its cache.
    """

    flush_bytes = 1 << 16
    flush_seconds = 0.25

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Truncate: on resume the executor writes every row again, from its cache.
        self._file: IO[str] | None = path.open("w", encoding="utf-8")
        self._pending: list[str] = []
        self._pending_size = 0
        self._last_flush = time.monotonic()

    def write(self, rows: list[Row]) -> None:
        if self._file is None:
            raise ValueError(f"The writer of {self.path} is closed.")
        for row in rows:
            line = _json_line(row)
            self._pending.append(line)
            self._pending_size += len(line)
        now = time.monotonic()
        if self._pending_size >= self.flush_bytes or now - self._last_flush >= self.flush_seconds:
            self._flush(now)

    def _flush(self, now: float) -> None:
        if self._file is not None and self._pending:
            self._file.write("".join(self._pending))
            self._file.flush()
        self._pending.clear()
        self._pending_size = 0
        self._last_flush = now

    def close(self) -> None:
        if self._file is not None:
            self._flush(time.monotonic())
            self._file.close()
            self._file = None


class _FileSink(Sink):
    """A sink writing one file per leaf step, named from a ``{leaf}`` template."""

    writes_files: ClassVar[bool] = True

    filename: str = Field(description="The file name in the run's output folder; {leaf} is the leaf step's name.")
    _paths: dict[str, Path] = PrivateAttr(default_factory=dict)

    @field_validator("filename")
    @classmethod
    def _only_leaf_placeholder(cls, value: str) -> str:
        # Checked when the sink is built, not when a long run ends and the file is to be named.
        try:
            value.format(leaf="leaf")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(f"filename may use only the placeholder {{leaf}}: {value!r} ({error})") from error
        return value

    def _target(self, directory: Path, leaf: str) -> Path:
        target = directory / self.filename.format(leaf=leaf)
        taken = [other for other, path in self._paths.items() if path == target and other != leaf]
        if taken:
            raise ValueError(
                f"{self.type_name()} sink: leaves {taken[0]!r} and {leaf!r} would both write {target}; "
                "put {leaf} in filename."
            )
        self._paths[leaf] = target
        return target

    def result(self) -> Path | dict[str, Path] | None:
        """The file written, or a file per leaf step when several leaves were written."""
        if not self._paths:
            return None
        if len(self._paths) == 1:
            return next(iter(self._paths.values()))
        return dict(self._paths)


class JsonlSink(_FileSink):
    """One JSON Lines file per leaf step, flushed after every chunk: readable even after a crash."""

    registry_name = "jsonl"

    filename: str = Field(
        default="{leaf}.jsonl",
        description="The file name in the run's output folder; {leaf} is the leaf step's name.",
    )

    def open(self, directory: Path, leaf: str) -> SinkWriter:
        return _LineWriter(self._target(directory, leaf))


class _SpoolWriter(_LineWriter):
    """Spools rows as JSON lines, then hands the spool to ``finish`` once, at close."""

    def __init__(self, spool: Path, finish: Callable[[Path], None]) -> None:
        super().__init__(spool)
        self._finish: Callable[[Path], None] | None = finish

    def close(self) -> None:
        super().close()
        finish, self._finish = self._finish, None
        if finish is None:
            return
        try:
            finish(self.path)
        except Exception as error:
            error.add_note(f"The rows are kept in {self.path}.")
            raise
        self.path.unlink(missing_ok=True)


class ParquetSink(_FileSink):
    """One Parquet file per leaf step, written at the end of the run with a schema that fits every row."""

    registry_name = "parquet"

    filename: str = Field(
        default="{leaf}.parquet",
        description="The file name in the run's output folder; {leaf} is the leaf step's name.",
    )

    def open(self, directory: Path, leaf: str) -> SinkWriter:
        import_optional("pyarrow.parquet", "parquet")  # fail now, not after the run
        target = self._target(directory, leaf)
        return _SpoolWriter(_spool_path(target), lambda spool: write_parquet(spool, target))


class DatasetSink(Sink):
    """A ``datasets.Dataset`` per leaf step, memory-mapped from an Arrow file in the run's folder.

    The file (``<leaf>.arrow``) is the dataset's storage: it must stay while the dataset is used.
    """

    registry_name = "dataset"

    _files: dict[str, Path] = PrivateAttr(default_factory=dict)

    def open(self, directory: Path, leaf: str) -> SinkWriter:
        import_optional("datasets", "datasets")  # fail now, not after the run
        target = directory / f"{leaf}.arrow"
        self._files[leaf] = target
        return _SpoolWriter(_spool_path(target), lambda spool: write_arrow_stream(spool, target))

    def result(self) -> Any:
        """The ``datasets.Dataset`` of the leaf step, or one per leaf step when several were written."""
        if not self._files:
            return None
        datasets = import_optional("datasets", "datasets")
        made = {leaf: datasets.Dataset.from_file(str(path)) for leaf, path in self._files.items()}
        return next(iter(made.values())) if len(made) == 1 else made


# -- spool to Arrow ----------------------------------------------------------------------------


def _spool_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.rows.jsonl")


def _pieces(spool: Path) -> Iterator[list[Row]]:
    """The spooled rows, a bounded piece at a time."""
    piece: list[Row] = []
    size = 0
    with spool.open(encoding="utf-8") as handle:
        for line in handle:
            piece.append(json.loads(line))
            size += len(line)
            if len(piece) >= PIECE_ROWS or size >= PIECE_BYTES:
                yield piece
                piece, size = [], 0
    if piece:
        yield piece


class _Schema:
    """One Arrow schema for every spooled row, widened piece by piece.

    Types are inferred per column so that one troublesome column does not take the others down;
    pyarrow's permissive promotion widens null to anything, int to float, and merges the fields
    of struct columns (metadata dicts with different keys).
    """

    def __init__(self) -> None:
        self.pa: Any = import_optional("pyarrow", "parquet")
        self.types: dict[str, Any] = {}
        self.as_text: set[str] = set()

    def add(self, piece: list[Row]) -> None:
        pa = self.pa
        columns = dict.fromkeys(key for row in piece for key in row)
        for column in columns:
            if column in self.as_text:
                continue
            try:
                found = pa.array([row.get(column) for row in piece]).type
                known = self.types.get(column)
                if known is not None and known != found:
                    merged = pa.unify_schemas(
                        [pa.schema([(column, known)]), pa.schema([(column, found)])], promote_options="permissive"
                    )
                    found = merged.field(column).type
            except (pa.ArrowException, OverflowError, TypeError, ValueError):
                self.types[column] = pa.string()
                self.as_text.add(column)
                continue
            self.types[column] = found

    def schema(self) -> Any:
        pa = self.pa
        for column, kind in self.types.items():
            # Parquet cannot store a struct without fields (a column of empty dicts): keep it as text.
            if not _storable(pa, kind):
                self.types[column] = pa.string()
                self.as_text.add(column)
        return pa.schema(list(self.types.items()))

    def table(self, piece: list[Row], schema: Any) -> Any:
        if self.as_text:
            piece = [{k: _as_text(v) if k in self.as_text else v for k, v in row.items()} for row in piece]
        return self.pa.Table.from_pylist(piece, schema=schema)


def _storable(pa: Any, kind: Any) -> bool:
    if pa.types.is_struct(kind):
        return kind.num_fields > 0 and all(_storable(pa, kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _storable(pa, kind.value_type)
    return True


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _convert(spool: Path, target: Path, open_writer: Callable[[Any, Any], Any]) -> None:
    """Spool to ``target`` through ``open_writer(file, schema)``, atomically (tmp file, then replace)."""
    inferred = _Schema()
    for piece in _pieces(spool):
        inferred.add(piece)
    schema = inferred.schema()
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with inferred.pa.OSFile(str(tmp), "wb") as file, open_writer(file, schema) as writer:
            for piece in _pieces(spool):
                writer.write_table(inferred.table(piece, schema))
        os.replace(tmp, target)
    finally:
        with suppress(FileNotFoundError):
            tmp.unlink()


def write_parquet(spool: Path, target: Path) -> None:
    """Convert a JSON Lines spool to a Parquet file whose schema fits every row."""
    parquet = import_optional("pyarrow.parquet", "parquet")
    _convert(spool, target, parquet.ParquetWriter)


def write_arrow_stream(spool: Path, target: Path) -> None:
    """Convert a JSON Lines spool to an Arrow stream file, the format ``Dataset.from_file`` maps."""
    pa = import_optional("pyarrow", "datasets")
    _convert(spool, target, pa.ipc.new_stream)
