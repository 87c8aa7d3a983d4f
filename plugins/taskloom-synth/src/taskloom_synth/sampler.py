"""The ``sampler`` source: rows drawn from declared columns, without any LLM.

    source:
      type: sampler
      num_rows: 1000
      seed: 7
      columns:
        field: {type: category, values: [science, history], weights: [2, 1]}
        topic: {type: subcategory, parent: field, values: {science: [stars, cells], history: [Rome, Edo]}}
        age: {type: integer, min: 8, max: 80}
        persona: {type: persona}
      constraints:
        - "age >= 18 or field == 'science'"

Row ``i`` is drawn from a generator seeded with ``(seed, i)`` alone, so a row never depends on
the rows before it: ``rows_between`` (a Ray shard) jumps straight to its first row and makes
the same rows ``rows()`` makes, and a resumed run sees the rows it saw before. A row that breaks
a constraint is drawn again from the same generator, at most ``max_tries`` times; a constraint
that cannot hold is found when the source is checked (before any LLM call), not by a run that
never ends.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from random import Random
from typing import TYPE_CHECKING, Any

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from taskloom.plugin import Row, Source
from taskloom_synth.columns import COLUMN_CLASSES, COLUMN_TYPES, Column, Compiled, Draw, ReadValues
from taskloom_synth.errors import SamplerError
from taskloom_synth.value_files import Scalar, read_values

if TYPE_CHECKING:  # jinja2 is imported when a constraint is compiled, not when the plugin registers
    from taskloom_curate.expressions import RowExpression

PROBE_DRAWS = (1_000, 20_000)
"""How many rows are drawn, ignoring constraints, when the source is checked: ``max_tries``, within these bounds.

A constraint that none of them meets would make rows exhaust their tries, so it is refused then."""


class SamplerSource(Source):
    """Rows drawn from declared columns (categories, ranges, dates, personas...), no LLM involved.

    In: ``columns={"n": {"type": "integer", "min": 1, "max": 3}}, num_rows=2, seed=1``;
    out: two rows such as ``{"n": 2}`` and ``{"n": 3}``, the same ones on every run with that seed.
    """

    registry_name = "sampler"

    columns: dict[str, Column] = Field(min_length=1, description="Column name -> what it holds, drawn in order.")
    num_rows: int = Field(gt=0, description="How many rows to make.")
    seed: int = Field(default=0, ge=0, description="The same seed gives the same rows, on any machine.")
    constraints: list[str] = Field(
        default_factory=list,
        description="Expressions over a row (Jinja syntax, e.g. 'end > start'); a row breaking one is drawn again.",
    )
    max_tries: int = Field(default=1_000, gt=0, le=1_000_000, description="Draws per row before giving up.")

    _files: dict[tuple[Path, str | None], list[Scalar]] = PrivateAttr(default_factory=dict)
    _checked: str | None = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        """Build the sampler; any mistake is one :class:`SamplerError` naming the column, not a pydantic dump."""
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise SamplerError(_explain(error)) from None

    @model_validator(mode="after")
    def _wired(self) -> SamplerSource:
        _draw_order(self.columns)
        for text in self.constraints:
            expression = _constraint(text)
            unknown = [name for name in expression.columns if name not in self.columns]
            if unknown:
                raise ValueError(
                    f"the constraint {text!r} reads {', '.join(repr(n) for n in unknown)}, which "
                    f"{'is not a column' if len(unknown) == 1 else 'are not columns'}; the columns are "
                    f"{', '.join(self.columns)}."
                )
        return self

    def __getstate__(self) -> dict[Any, Any]:
        # A Ray worker gets the source pickled; what was read or checked here is redone there.
        state: dict[Any, Any] = super().__getstate__()
        private = state.get("__pydantic_private__")
        if private:
            state["__pydantic_private__"] = {**private, "_files": {}, "_checked": None}
        return state

    # -- the Source contract -------------------------------------------------------------------

    def describe(self) -> str:
        names = ", ".join(self.columns)
        return f"{self.type_name()} of {self.num_rows:,} rows ({names}), seed {self.seed}"

    def count(self) -> int:
        return self.num_rows

    def check(self) -> None:
        """Read every file, check every subcategory's parent values and every constraint, before any row.

        A constraint that none of ``max_tries`` draws (at least 1,000, at most 20,000) meets, or
        a set of them that no draw meets together, would make rows exhaust their tries: it is
        refused here, named, with the columns it reads. Done once per configuration.
        """
        key = self.model_dump_json()
        if self._checked == key:
            return
        plan = self._plan()
        plan.probe(min(max(self.max_tries, PROBE_DRAWS[0]), PROBE_DRAWS[1]))
        self._checked = key

    def first_row(self) -> Row:
        self.check()
        return self._plan().row(0)

    def rows(self) -> Iterator[Row]:
        return self.rows_between(0, self.num_rows)

    def rows_between(self, start: int, stop: int) -> Iterator[Row]:
        self.check()
        return self._plan().rows(max(start, 0), min(stop, self.num_rows))

    # -- internals -------------------------------------------------------------------------------

    def _plan(self) -> _Plan:
        """A fresh plan (its own generator), so two readers of one source never share a stream."""
        return _Plan(self, self._read)

    def _read(self, path: Path, field: str | None, column: str) -> list[Scalar]:
        key = (path, field)
        if key not in self._files:
            self._files[key] = read_values(path, field, column)
        return self._files[key]


class _Plan:
    """The columns compiled to closures over one generator, in an order where parents come first."""

    def __init__(self, source: SamplerSource, read: ReadValues) -> None:
        self.rng = Random()
        self.seed = source.seed
        self.tries = source.max_tries
        self.names = list(source.columns)
        order = _draw_order(source.columns)
        compiled: dict[str, Compiled] = {}
        for name in order:
            compiled[name] = source.columns[name].compile(name, self.rng, compiled, read)
        self.draws: list[tuple[str, Draw]] = [(name, compiled[name].draw) for name in order]
        self.reorder = order != self.names  # rows keep the declared column order
        self.constraints = [(text, _constraint(text)) for text in source.constraints]
        self.tests = [expression for _, expression in self.constraints]

    def _seed(self, index: int) -> None:
        # seed and index never collide: the index keeps the low 64 bits to itself.
        self.rng.seed((self.seed << 64) | index)

    def _draw(self) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for name, draw in self.draws:
            row[name] = draw(row)
        return row

    def _holds(self, text: str, expression: RowExpression, row: dict[str, Any]) -> bool:
        try:
            return bool(expression(row))
        except Exception as error:  # a comparison of a string with a number, a division by zero...
            raise SamplerError(
                f"sampler: the constraint {text!r} cannot be evaluated on the row {row} "
                f"({type(error).__name__}: {error}); compare columns of the same kind."
            ) from None

    def row(self, index: int) -> Row:
        self._seed(index)
        draws, tests = self.draws, self.tests
        row: dict[str, Any] = {}
        try:
            for _ in range(self.tries):
                row = {}
                for name, draw in draws:
                    row[name] = draw(row)
                for test in tests:
                    if not test(row):
                        break
                else:
                    return {name: row[name] for name in self.names} if self.reorder else row
        except Exception:
            for text, test in self.constraints:  # which one raised, and why, in its own words
                self._holds(text, test, row)
            raise
        raise self._exhausted(index)

    def rows(self, start: int, stop: int) -> Iterator[Row]:
        if self.constraints:
            for index in range(start, stop):
                yield self.row(index)
            return
        seed, draws, names, reorder = self.rng.seed, self.draws, self.names, self.reorder
        high = self.seed << 64
        for index in range(start, stop):  # row() without constraints, inlined: the common case
            seed(high | index)
            row: dict[str, Any] = {}
            for name, draw in draws:
                row[name] = draw(row)
            yield {name: row[name] for name in names} if reorder else row

    def probe(self, draws: int) -> None:
        """Refuse constraints that none of ``draws`` unconstrained first draws meets, alone or together."""
        if not self.constraints:
            self.row(0)  # every column draws once: a mistake in one shows now
            return
        held = [0] * len(self.constraints)
        together = 0
        for index in range(draws):
            self._seed(index)
            row = self._draw()
            results = [self._holds(text, test, row) for text, test in self.constraints]
            for position, ok in enumerate(results):
                held[position] += ok
            together += all(results)
        never = [position for position, count in enumerate(held) if count == 0]
        if never:
            text, expression = self.constraints[never[0]]
            raise SamplerError(
                f"sampler: the constraint {text!r} (reads {', '.join(expression.columns) or 'no column'}) held in "
                f"none of {draws:,} draws, so rows could not be made within max_tries={self.tries:,} draws each; "
                "check it against the columns' values and ranges."
            )
        if not together:
            listed = "; ".join(repr(text) for text, _ in self.constraints)
            raise SamplerError(
                f"sampler: the constraints {listed} each hold sometimes, but never together in {draws:,} draws, so "
                f"rows could not be made within max_tries={self.tries:,} draws each; relax one of them."
            )

    def _exhausted(self, index: int) -> SamplerError:
        """Why row ``index`` could not be made: its draws replayed, each constraint's failures counted."""
        self._seed(index)
        failed = [0] * len(self.constraints)
        for _ in range(self.tries):
            row = self._draw()
            for position, (text, test) in enumerate(self.constraints):
                failed[position] += not self._holds(text, test, row)
        worst = max(range(len(failed)), key=failed.__getitem__)
        text, expression = self.constraints[worst]
        others = [
            f"{self.constraints[p][0]!r} failed {count:,}" for p, count in enumerate(failed) if p != worst and count
        ]
        return SamplerError(
            f"sampler row {index}: no draw out of {self.tries:,} met every constraint. The constraint {text!r} (reads "
            f"{', '.join(expression.columns) or 'no column'}) failed on {failed[worst]:,} of the {self.tries:,} draws"
            + (f"; also {', '.join(others)}" if others else "")
            + ". Relax it, widen the columns it reads, or raise max_tries."
        )


def _constraint(text: str) -> RowExpression:
    from taskloom_curate.expressions import ExpressionError, RowExpression

    try:
        return RowExpression(text)
    except ExpressionError as error:
        raise ValueError(f"constraint: {error}") from None


def _draw_order(columns: Mapping[str, Any]) -> list[str]:
    """The columns with every parent before its children; an unknown parent or a cycle is named."""
    for name, spec in columns.items():
        for parent in spec.parents():
            if parent not in columns:
                raise ValueError(
                    f"column {name!r} ({spec.type}) has the parent {parent!r}, which is not a column; "
                    f"the columns are {', '.join(columns)}."
                )
            if parent == name:
                raise ValueError(f"column {name!r} ({spec.type}) is its own parent; name another column.")
    order: list[str] = []
    state: dict[str, str] = {}  # "open" while its parents are visited, "done" once placed

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "open":
            cycle = [*path[path.index(name) :], name]
            raise ValueError(
                f"the columns {' -> '.join(cycle)} are each other's parents, a cycle; one of them must not "
                "depend on the others."
            )
        state[name] = "open"
        for parent in columns[name].parents():
            visit(parent, [*path, name])
        state[name] = "done"
        order.append(name)

    for name in columns:
        visit(name, [])
    return order


def _explain(error: ValidationError) -> str:
    """A pydantic error as sentences: 'column 'age' (integer): min 5 is above max 1; ...'."""
    lines = []
    for item in error.errors(include_url=False):
        location = [str(part) for part in item["loc"]]
        where, kind = "sampler", ""
        if location[:1] == ["columns"] and len(location) >= 2:
            where = f"sampler column {location[1]!r}"
            rest = location[2:]
            if rest and rest[0] in COLUMN_TYPES:
                kind = rest[0]
                where += f" ({kind})"
                rest = rest[1:]
            location = rest
        if item["type"] == "union_tag_invalid":
            tag = item.get("ctx", {}).get("tag")
            lines.append(f"{where}: unknown type {tag!r}; the column types are {', '.join(COLUMN_TYPES)}.")
            continue
        if item["type"] == "union_tag_not_found":
            lines.append(f"{where}: no type; give one of {', '.join(COLUMN_TYPES)}.")
            continue
        field = ".".join(part for part in location if not part.startswith("function-"))
        if item["type"] == "missing":
            lines.append(f"{where}: {field} is required.")
        elif item["type"] == "extra_forbidden" and kind in COLUMN_CLASSES and len(location) == 1:
            known = ", ".join(COLUMN_CLASSES[kind].model_fields)
            lines.append(f"{where}: {field} is not a setting of {kind} columns; their settings are {known}.")
        elif item["type"] == "extra_forbidden" and not location[:-1]:
            known = ", ".join(SamplerSource.model_fields)
            lines.append(f"sampler: {field} is not a setting of the sampler; its settings are {known}.")
        else:
            message = str(item["ctx"]["error"]) if item["type"] == "value_error" else item["msg"]
            lines.append(f"{where}: {field + ': ' if field else ''}{message}")
    return "\n".join(lines)


__all__ = ["PROBE_DRAWS", "SamplerSource"]
