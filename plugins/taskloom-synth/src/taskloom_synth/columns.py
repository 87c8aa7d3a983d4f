"""The sampler's column types: what a column declares, how it is checked, and how one value is drawn.

A column is a small pydantic model whose ``type`` picks the kind, so that a pipeline file and
Python build the same thing and a mistake is caught, with the column's name, before any row is
drawn. Shape mistakes (an unknown type, min above max, weights that do not match) are checked
when the model is built; what needs a file or another column (a choice read from disk, a
subcategory's parent values) is checked when the sampler compiles its plan, still before the
first row.

Drawing is the hot path (100,000 rows in well under two seconds), so each column compiles to a
closure over a bound ``random.random`` of the sampler's generator: no attribute lookups, no
``random.choices`` set-up per row, one uniform number per value.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import accumulate
from pathlib import Path
from random import Random
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from taskloom_synth.errors import SamplerError
from taskloom_synth.value_files import Scalar, needs_field

Draw = Callable[[dict[str, Any]], Any]
"""Draws one value for a row; the row holds the columns drawn before (a subcategory reads its parent)."""
ReadValues = Callable[[Path, str | None, str], list[Scalar]]
"""Reads a value file (path, field, column name); the sampler caches what it reads."""

LISTABLE = 10_000
"""The most values a column may take and still be a subcategory's parent (each needs an entry)."""


@dataclass(frozen=True)
class Compiled:
    """A column ready to draw: its closure, and every value it can take when they can be listed."""

    kind: str
    draw: Draw
    values: list[Scalar] | None


def check_weights(values: Sequence[Scalar], weights: Sequence[float] | None) -> None:
    """Raise ``ValueError`` (pydantic turns it into the column's error) for weights that cannot be chances."""
    if weights is None:
        return
    if len(weights) != len(values):
        raise ValueError(
            f"weights has {len(weights)} number{'s' * (len(weights) != 1)} for {len(values)} value"
            f"{'s' * (len(values) != 1)}; give one weight per value, in the same order, or leave weights "
            "out for equal chances."
        )
    for position, weight in enumerate(weights):
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(
                f"weights[{position}] is {weight} (for the value {values[position]!r}); a weight is a relative "
                "chance: a finite number >= 0."
            )
    if not any(weights):
        raise ValueError("weights are all 0; at least one value needs a weight above 0 to be drawn at all.")


def picker(values: Sequence[Scalar], weights: Sequence[float] | None, random: Callable[[], float]) -> Draw:
    """One of ``values``, with chances proportional to ``weights`` (equal without them)."""
    chosen = list(values)
    if weights is not None and len(set(weights)) > 1:
        cumulative = list(accumulate(float(w) for w in weights))
        total = cumulative[-1]
        # bisect_right skips a value of weight 0: its bound equals the one before it.
        return lambda row: chosen[bisect_right(cumulative, random() * total)]
    count = len(chosen)
    if count == 1:
        only = chosen[0]
        return lambda row: only
    return lambda row: chosen[int(random() * count)]


def drawable(values: Sequence[Scalar], weights: Sequence[float] | None) -> list[Scalar]:
    """The values a draw can give (those of weight 0 never come up), each once, in order."""
    kept = values if weights is None else [v for v, w in zip(values, weights, strict=True) if w > 0]
    return list(dict.fromkeys(kept))


class _Column(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def parents(self) -> list[str]:
        """The columns this one reads, which must be drawn before it."""
        return []

    def compile(self, name: str, rng: Random, drawn: Mapping[str, Compiled], read: ReadValues) -> Compiled:
        raise NotImplementedError


class CategoryColumn(_Column):
    """A few labelled values, each with a chance: ``{type: category, values: [a, b], weights: [3, 1]}``."""

    type: Literal["category"] = "category"
    values: list[Scalar] = Field(min_length=1, description="The values, in order.")
    weights: list[float] | None = Field(
        default=None, description="A relative chance per value (>= 0, same order); None: equal chances."
    )

    @model_validator(mode="after")
    def _weights_fit(self) -> CategoryColumn:
        check_weights(self.values, self.weights)
        return self

    def compile(self, name: str, rng: Random, drawn: Mapping[str, Compiled], read: ReadValues) -> Compiled:
        return Compiled(self.type, picker(self.values, self.weights, rng.random), drawable(self.values, self.weights))


class WeightedValues(BaseModel):
    """A subcategory's values for one parent value, with their chances."""

    model_config = ConfigDict(extra="forbid")

    values: list[Scalar] = Field(min_length=1)
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _weights_fit(self) -> WeightedValues:
        check_weights(self.values, self.weights)
        return self


class SubcategoryColumn(_Column):
    """Values that depend on another column's value: a topic within the field drawn for the row.

    ``values`` maps each value of the ``parent`` column to its own list (equal chances) or to
    ``{values: [...], weights: [...]}``. Every value the parent can take needs an entry, so no
    row can ever meet a parent value with nothing to draw.
    """

    type: Literal["subcategory"] = "subcategory"
    parent: str = Field(min_length=1, description="The column whose value picks the list to draw from.")
    values: dict[Scalar, list[Scalar] | WeightedValues] = Field(
        min_length=1, description="Parent value -> its values (a list, or values with weights)."
    )

    @model_validator(mode="after")
    def _entries_fit(self) -> SubcategoryColumn:
        for key, entry in self.values.items():
            if isinstance(entry, list) and not entry:
                raise ValueError(f"values[{key!r}] is empty; give at least one value for the parent value {key!r}.")
        return self

    def parents(self) -> list[str]:
        return [self.parent]

    def _entry(self, value: Scalar) -> tuple[Scalar, WeightedValues] | None:
        # A dump to JSON turns keys into strings (1 -> "1", True -> "true"): find those too.
        for key in (value, str(value), str(value).lower()):
            if key in self.values:
                entry = self.values[key]
                return key, entry if isinstance(entry, WeightedValues) else WeightedValues(values=entry)
        return None

    def compile(self, name: str, rng: Random, drawn: Mapping[str, Compiled], read: ReadValues) -> Compiled:
        parent = drawn[self.parent]
        where = f"sampler column {name!r} (subcategory)"
        if parent.values is None:
            raise SamplerError(
                f"{where}: its parent {self.parent!r} is a {parent.kind} column, whose values cannot be listed; "
                "a parent must be a category, subcategory, choice or persona column, or an integer column of at "
                f"most {LISTABLE:,} values."
            )
        tables: dict[Scalar, Draw] = {}
        used: set[Scalar] = set()
        missing: list[Scalar] = []
        every: list[Scalar] = []
        for value in parent.values:
            found = self._entry(value)
            if found is None:
                missing.append(value)
                continue
            key, entry = found
            used.add(key)
            tables[value] = picker(entry.values, entry.weights, rng.random)
            every += drawable(entry.values, entry.weights)
        if missing:
            shown = ", ".join(repr(v) for v in missing[:5]) + (
                f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            )
            raise SamplerError(
                f"{where}: no entry in values for {shown}, which the column {self.parent!r} can take; "
                f"add {'it' if len(missing) == 1 else 'them'} under values (a list of values for each)."
            )
        unused = [key for key in self.values if key not in used]
        if unused:
            raise SamplerError(
                f"{where}: values has {', '.join(repr(k) for k in unused)}, which the column {self.parent!r} never "
                f"takes (its values: {', '.join(repr(v) for v in parent.values[:10])}"
                f"{', ...' if len(parent.values) > 10 else ''}); fix the spelling or remove the entry."
            )
        parent_name = self.parent
        return Compiled(self.type, lambda row: tables[row[parent_name]](row), list(dict.fromkeys(every)))


class IntegerColumn(_Column):
    """A whole number from ``min`` to ``max``, both included, every one equally likely."""

    type: Literal["integer"] = "integer"
    min: int = Field(description="The smallest value (included).")
    max: int = Field(description="The largest value (included).")

    @model_validator(mode="after")
    def _ordered(self) -> IntegerColumn:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}; give min <= max (both are included).")
        return self

    def compile(self, name: str, rng: Random, drawn: Mapping[str, Compiled], read: ReadValues) -> Compiled:
        low, span = self.min, self.max - self.min + 1
        values: list[Scalar] | None = list(range(self.min, self.max + 1)) if span <= LISTABLE else None
        if span <= 2**32:  # a float has 53 bits: exact enough for any such span
            random = rng.random
            return Compiled(self.type, lambda row: low + int(random() * span), values)
        below = rng.randrange
        return Compiled(self.type, lambda row: low + below(span), values)


class FloatColumn(_Column):
    """A number between ``min`` and ``max``, uniformly, rounded to ``decimals`` places when given."""

    type: Literal["float"] = "float"
    min: float = Field(description="The lower bound.")
    max: float = Field(description="The upper bound.")
    decimals: int | None = Field(default=None, ge=0, le=15, description="Round to this many decimal places.")

    @model_validator(mode="after")
    def _ordered(self) -> FloatColumn:
        if not (math.isfinite(self.min) and math.isfinite(self.max)):
            raise ValueError(f"min and max must be finite numbers, not {self.min} and {self.max}.")
        if self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}; give min <= max.")
        return self

    def compile(self, name: str, rng: Random, drawn: Mapping[str, Compiled], read: ReadValues) -> Compiled:
        low, width, random = self.min, self.max - self.min, rng.random
        places = self.decimals
        if places is None:
            return Compiled(self.type, lambda row: low + random() * width, None)
        return Compiled(self.type, lambda row: round(low + random() * width, places), None)


class ChoiceColumn(_Column):
    """One of a list, every item equally likely: given inline, or read from a file (one per line, JSONL, CSV).

    For a handful of labels with chances use ``category``; ``choice`` is for long lists (names,
    cities, seed topics) that usually live in a file.
    """

    type: Literal["choice"] = "choice"
    values: list[Scalar] | None = Field(default=None, min_length=1, description="The items, inline.")
    file: Path | None = Field(
        default=None, description="A .txt file (one item a line), or a .jsonl / .csv file with field."
    )
    field: str | None = Field(default=None, min_length=1, description="The key (JSONL) or column (CSV) to take.")

    @model_validator(mode="after")
    def _one_source(self) -> ChoiceColumn:
        if (self.values is None) == (self.file is None):
            raise ValueError(
                "give exactly one of values (a list, inline) or file (a .txt, .jsonl or .csv file), "
                f"not {'both' if self.values is not None else 'neither'}."
            )
        _check_field(self.file, self.field)
        return self

    def compile(self, name: str, rng: Random, drawn: Mapping[str, Compiled], read: ReadValues) -> Compiled:
        values = self.values if self.values is not None else read(self.file or Path(), self.field, name)
        return Compiled(self.type, picker(values, None, rng.random), list(dict.fromkeys(values)))


class DateColumn(_Column):
    """A day from ``start`` to ``end`` (both included), written with ``format`` (strftime codes)."""

    type: Literal["date"] = "date"
    start: date = Field(description="The first day that may be drawn, e.g. 2024-01-01.")
    end: date = Field(description="The last day that may be drawn.")
    format: str = Field(default="%Y-%m-%d", min_length=1, description="How the day is written (strftime).")

    @model_validator(mode="after")
    def _ordered(self) -> DateColumn:
        if self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}; give start <= end (both are included).")
        return self

    def compile(self, name: str, rng: Random, drawn: Mapping[str, Compiled], read: ReadValues) -> Compiled:
        first, days, fmt, random = self.start.toordinal(), (self.end - self.start).days + 1, self.format, rng.random
        written: dict[int, str] = {}  # strftime costs a microsecond; most ranges repeat days soon

        def draw(row: dict[str, Any]) -> str:
            offset = int(random() * days)
            text = written.get(offset)
            if text is None:
                text = written[offset] = date.fromordinal(first + offset).strftime(fmt)
            return text

        return Compiled(self.type, draw, None)


class PersonaColumn(_Column):
    """A one-sentence person, from the list shipped with taskloom-synth or from your own file."""

    type: Literal["persona"] = "persona"
    file: Path | None = Field(
        default=None, description="Your own personas (a .txt file, one a line, or .jsonl / .csv with field)."
    )
    field: str | None = Field(default=None, min_length=1, description="The key (JSONL) or column (CSV) to take.")

    @model_validator(mode="after")
    def _field_fits(self) -> PersonaColumn:
        _check_field(self.file, self.field)
        return self

    def compile(self, name: str, rng: Random, drawn: Mapping[str, Compiled], read: ReadValues) -> Compiled:
        if self.file is None:
            from taskloom_synth.personas import persona_values

            values = persona_values()
        else:
            values = read(self.file, self.field, name)
        return Compiled(self.type, picker(values, None, rng.random), list(dict.fromkeys(values)))


def _check_field(file: Path | None, field: str | None) -> None:
    if file is None and field is not None:
        raise ValueError(f"field={field!r} names a field of a file, but no file is given.")
    if file is not None and needs_field(file) and field is None:
        raise ValueError(f"{file} is a table: say which of its fields to take with field: <name>.")


Column = Annotated[
    CategoryColumn | SubcategoryColumn | IntegerColumn | FloatColumn | ChoiceColumn | DateColumn | PersonaColumn,
    Field(discriminator="type"),
]
"""Any column, picked by its ``type``."""

COLUMN_CLASSES: dict[str, type[BaseModel]] = {
    "category": CategoryColumn,
    "subcategory": SubcategoryColumn,
    "integer": IntegerColumn,
    "float": FloatColumn,
    "choice": ChoiceColumn,
    "date": DateColumn,
    "persona": PersonaColumn,
}
COLUMN_TYPES = tuple(COLUMN_CLASSES)

__all__ = [
    "COLUMN_CLASSES",
    "COLUMN_TYPES",
    "CategoryColumn",
    "ChoiceColumn",
    "Column",
    "Compiled",
    "DateColumn",
    "FloatColumn",
    "IntegerColumn",
    "PersonaColumn",
    "SubcategoryColumn",
    "WeightedValues",
]
