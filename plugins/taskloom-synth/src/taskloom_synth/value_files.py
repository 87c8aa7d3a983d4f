"""Lists of values read from a file, for ``choice`` and ``persona`` columns.

Three shapes, told apart by the suffix, because those are what people already have lying
around: a plain text file (one value per line; blank lines and lines starting with ``#`` are
skipped), a JSON Lines file or a CSV file with a header (then ``field`` names the key or
column to take). Every failure is a :class:`SamplerError` naming the column and the file, and
the line when one is at fault, since the file is read before any row is drawn.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from taskloom_synth.errors import SamplerError

Scalar = str | int | float | bool

TABLE_SUFFIXES = (".jsonl", ".ndjson", ".csv")
"""Suffixes read as tables (a ``field`` picks the column); any other file is one value per line."""


def needs_field(path: Path) -> bool:
    """Whether ``path`` is a table, whose values are one field of each record."""
    return path.suffix.lower() in TABLE_SUFFIXES


def read_values(path: Path, field: str | None, column: str) -> list[Scalar]:
    """The values of ``path`` in file order; at least one, or a :class:`SamplerError`."""
    where = f"sampler column {column!r}: the file {path}"
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's byte-order mark is not a value
    except FileNotFoundError:
        raise SamplerError(f"{where} does not exist (relative paths start where the command runs).") from None
    except IsADirectoryError:
        raise SamplerError(f"{where} is a folder; give a .txt, .jsonl or .csv file.") from None
    except UnicodeDecodeError as error:
        raise SamplerError(f"{where} is not UTF-8 text ({error.reason}); save it as UTF-8.") from None
    except OSError as error:
        raise SamplerError(f"{where} cannot be read ({error.strerror or error}).") from None
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        values = _jsonl_values(text, _field(field, where), where)
    elif suffix == ".csv":
        values = _csv_values(text, _field(field, where), where)
    else:
        if field is not None:
            raise SamplerError(
                f"{where} is read as one value per line, so field={field!r} has no meaning; "
                "drop it, or give a .jsonl or .csv file."
            )
        values = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not values:
        raise SamplerError(f"{where} holds no values; give at least one.")
    return values


def _field(field: str | None, where: str) -> str:
    if field is None:
        raise SamplerError(f"{where} is a table: say which of its fields to take with field: <name>.")
    return field


def _jsonl_values(text: str, field: str, where: str) -> list[Scalar]:
    values: list[Scalar] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise SamplerError(f"{where}, line {number}: not valid JSON ({error.msg}).") from None
        if not isinstance(record, dict) or field not in record:
            keys = sorted(record) if isinstance(record, dict) else f"a {type(record).__name__}"
            raise SamplerError(f"{where}, line {number}: no field {field!r} (it has {keys}).")
        value = record[field]
        if not isinstance(value, str | int | float | bool):
            raise SamplerError(
                f"{where}, line {number}: field {field!r} is a {type(value).__name__}; "
                "a value must be a string, a number or a boolean."
            )
        values.append(value)
    return values


def _csv_values(text: str, field: str, where: str) -> list[Scalar]:
    reader = csv.DictReader(io.StringIO(text, newline=""))  # a quoted cell may hold a line break
    try:
        if reader.fieldnames is None or field not in reader.fieldnames:
            raise SamplerError(f"{where}: no column {field!r} in its header {reader.fieldnames or '(empty)'}.")
        return [row[field] for row in reader if row.get(field)]
    except csv.Error as error:
        raise SamplerError(f"{where}, line {reader.line_num}: not valid CSV ({error}).") from None
