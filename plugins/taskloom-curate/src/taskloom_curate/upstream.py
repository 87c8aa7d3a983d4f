"""The checks the curation steps share: on the pipeline's columns, and on each row's.

A filter or a deduplication drops a *row* without a column, with that reason, so its inputs are
optional at run time; but a column that no step before it makes at all is a mistake in the
pipeline, and is refused before anything runs, with the columns that are there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskloom.plugin import TaskloomError


class UpstreamColumnError(TaskloomError, ValueError):
    """A curation step reads a column that no step before it makes."""


def columns_from_upstream(
    step: str, what: str, wanted: Sequence[str], available: Sequence[str], error: type[UpstreamColumnError]
) -> list[str]:
    """``available`` unchanged (rows pass through), or ``error`` naming the step, what it reads, the columns."""
    missing = [column for column in wanted if column not in available]
    if missing:
        raise error(
            f"Step {step!r}: {what} {', '.join(map(repr, missing))}, which the rows reaching it do not have. "
            f"Their columns: {', '.join(available) or '(none)'}."
        )
    return list(available)


def absent(row: dict[str, Any], columns: Sequence[str]) -> str | None:
    """Why a row cannot be judged by these columns (``rating is missing``, ``rating is None``), or None."""
    for column in columns:
        if column not in row:
            return f"{column} is missing"
        if row[column] is None:
            return f"{column} is None"
    return None


__all__ = ["UpstreamColumnError", "absent", "columns_from_upstream"]
