"""Running a step in a test the way a user's script does: load it, process the rows, unload it."""

from __future__ import annotations

from collections.abc import Sequence

from taskloom.steps import Step
from taskloom.typing import Row


def processed(step: Step, rows: Sequence[Row]) -> list[Row]:
    """Every row ``step`` makes of ``rows`` (copies, so the caller's stay as they were), between a
    ``load`` and an ``unload``: a test reads the rows, not the batches."""
    step.load()
    try:
        return [row for batch in step.process([dict(row) for row in rows]) for row in batch]
    finally:
        step.unload()
