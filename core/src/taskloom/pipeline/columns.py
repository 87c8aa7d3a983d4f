"""Column steps: keep, rename, combine and group columns between the steps that make them.

They call no LLM and are cheap, so they run on the pipeline's event loop rather than in a worker
thread. None of them changes a row it receives: the same row object may also be on its way to
another branch or to a sink, so each builds new rows.

Each declares what it reads (``inputs``) and, through ``columns_after``, what a row looks like
after it, so that a pipeline can tell before the first LLM call that a later step will miss a
column this one dropped or renamed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from pydantic import Field, model_validator

from taskloom.errors import MissingColumnError, TaskloomError
from taskloom.steps import JoinStep, Step, StepColumns
from taskloom.tasks.base import METADATA
from taskloom.typing import Row


class JoinError(TaskloomError, ValueError):
    """A join step got rows from its branches that it cannot put together."""


def _after_mappings(step: Step, column: str) -> str:
    """The name ``column`` ends up with once ``map_outputs`` has applied the step's mappings."""
    for old, new in [*step.input_mappings.items(), *step.output_mappings.items()]:
        if column == old:
            column = new
    return column


class KeepColumns(Step):
    """Keep only the listed columns, in the order listed; every other column is dropped."""

    registry_name = "keep-columns"
    runs_in_thread: ClassVar[bool] = False

    columns: list[str] = Field(min_length=1, description="The columns to keep, in the order they should have.")

    @property
    def inputs(self) -> StepColumns:
        return list(self.columns)

    @property
    def outputs(self) -> StepColumns:
        return list(self.columns)

    def columns_after(self, available: Sequence[str]) -> list[str]:
        return [_after_mappings(self, column) for column in self.columns]

    def process(self, inputs: list[Row]) -> Iterator[list[Row]]:
        yield [{column: row[column] for column in self.columns} for row in inputs]


class RenameColumns(Step):
    """Rename columns, ``{old: new}``; a column renamed onto an existing one replaces it."""

    registry_name = "rename-columns"
    runs_in_thread: ClassVar[bool] = False

    mapping: dict[str, str] = Field(min_length=1, description="Old column name -> new column name.")

    @model_validator(mode="after")
    def _distinct_targets(self) -> RenameColumns:
        targets = list(self.mapping.values())
        doubled = sorted({t for t in targets if targets.count(t) > 1})
        if doubled:
            raise ValueError(f"several columns would be renamed to {doubled}; each new name must be distinct.")
        return self

    @property
    def inputs(self) -> StepColumns:
        return list(self.mapping)

    @property
    def outputs(self) -> StepColumns:
        return list(self.mapping.values())

    def _rename(self, columns: Sequence[str]) -> list[str]:
        targets = set(self.mapping.values())
        return [self.mapping.get(c, c) for c in columns if c in self.mapping or c not in targets]

    def columns_after(self, available: Sequence[str]) -> list[str]:
        return list(dict.fromkeys(_after_mappings(self, column) for column in self._rename(available)))

    def process(self, inputs: list[Row]) -> Iterator[list[Row]]:
        # A renamed column keeps its place; an existing column it lands on gives way. Swaps work.
        targets = set(self.mapping.values())
        yield [
            {self.mapping.get(k, k): v for k, v in row.items() if k in self.mapping or k not in targets}
            for row in inputs
        ]


def _merge_rows(rows: Sequence[Row]) -> Row:
    """One row from several: later values win, metadata dicts are merged key by key."""
    merged: Row = {}
    for row in rows:
        for key, value in row.items():
            if key == METADATA and isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            elif key == METADATA and isinstance(value, dict):
                merged[key] = dict(value)
            else:
                merged[key] = value
    return merged


class CombineColumns(JoinStep):
    """Put the columns the branches made side by side: one row per source row from one of each branch.

    For the same column, a later branch's value wins, except ``distilabel_metadata``, whose dicts
    are merged key by key (each task keys its own entries, so nothing is lost). When branches made
    several rows each (ungrouped generations), the i-th rows are combined, which needs the same
    count from every branch.
    """

    registry_name = "combine-columns"
    runs_in_thread: ClassVar[bool] = False

    def join(self, branches: list[list[Row]]) -> list[Row]:
        counts = [len(branch) for branch in branches]
        if len(set(counts)) > 1:
            raise JoinError(
                f"Step {self.name!r} got {', '.join(map(str, counts))} rows from its branches for one source "
                "row; it combines the i-th rows of each branch, so every branch must make the same number. "
                "Set group_generations=True on the tasks, or group the rows with group-columns."
            )
        return [_merge_rows(rows) for rows in zip(*branches, strict=True)]


class GroupColumns(JoinStep):
    """Collect columns from every branch into list columns: two answers become ``generations: [a, b]``.

    For each source row: one row with the columns of the first row made, plus, for each listed
    column, a list of that column from every row of every branch, in branch order. The listed
    columns themselves are dropped (their values are in the lists). ``distilabel_metadata`` is
    grouped like the others when listed; otherwise the first row's is kept.
    """

    registry_name = "group-columns"
    runs_in_thread: ClassVar[bool] = False

    columns: list[str] = Field(min_length=1, description="The columns to collect into lists.")
    output_columns: list[str] | None = Field(
        default=None, description="The list columns' names, one per column; default: the column name plus 's'."
    )

    @model_validator(mode="after")
    def _one_output_per_column(self) -> GroupColumns:
        if self.output_columns is not None and len(self.output_columns) != len(self.columns):
            raise ValueError(
                f"output_columns names {len(self.output_columns)} columns but columns names {len(self.columns)}; "
                "give one output name per grouped column."
            )
        return self

    def grouped_names(self) -> list[str]:
        """Where each grouped column's list goes."""
        if self.output_columns is not None:
            return list(self.output_columns)
        return [f"{column}s" for column in self.columns]

    @property
    def inputs(self) -> StepColumns:
        return list(self.columns)

    @property
    def outputs(self) -> StepColumns:
        return self.grouped_names()

    def columns_after(self, available: Sequence[str]) -> list[str]:
        kept = [column for column in available if column not in self.columns]
        return list(dict.fromkeys([*kept, *self.grouped_names()]))

    def columns_after_branches(self, branches: Sequence[Sequence[str]]) -> list[str]:
        # Only the first branch's row is kept around the grouped lists.
        return self.columns_after(list(branches[0]) if branches else [])

    def join(self, branches: list[list[Row]]) -> list[Row]:
        rows = [row for branch in branches for row in branch]
        if not rows:
            return []
        for index, row in enumerate(rows):
            for column in self.columns:
                if column not in row:
                    raise MissingColumnError(self.name, column, row.keys(), index)
        grouped: Row = {k: v for k, v in rows[0].items() if k not in self.columns}
        if isinstance(grouped.get(METADATA), dict):
            grouped[METADATA] = dict(grouped[METADATA])  # a later task adds to it; the branch row must not change
        for column, target in zip(self.columns, self.grouped_names(), strict=True):
            values: list[Any] = [row[column] for row in rows]
            grouped[target] = values
        return [grouped]
