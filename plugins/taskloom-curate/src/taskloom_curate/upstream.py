"""The one check the curation steps share: the columns they read must come from the steps before.

A filter or a deduplication drops a *row* without a column, with that reason, so its inputs are
optional at run time; but a column that no step before it makes at all is a mistake in the
pipeline, and is refused before anything runs, with the columns that are there.
"""

from __future__ import annotations

from collections.abc import Sequence

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


__all__ = ["UpstreamColumnError", "columns_from_upstream"]
