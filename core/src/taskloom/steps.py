"""Step: the unit a pipeline runs, with declared input and output columns.

Columns are declared, not discovered, so a pipeline can be checked before any row flows and a
missing column can be reported with the step's name instead of as a ``KeyError`` deep inside.
"""

from __future__ import annotations

import contextvars
import functools
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from pydantic import Field, PrivateAttr, model_validator

from taskloom.component import Component, kebab_case
from taskloom.errors import MissingColumnError
from taskloom.typing import Row
from taskloom.work import RowWork, run_work

if TYPE_CHECKING:
    from taskloom.pipeline.base import Source

_SHADOW = "__taskloom_shadowed__"
_MISSING = object()
_IN_RECIPE: contextvars.ContextVar[bool] = contextvars.ContextVar("taskloom_in_recipe", default=False)
ProcessMethod: TypeAlias = Callable[[Any, list[Row]], Iterator[list[Row]]]


def _in_recipe() -> bool:
    """Whether the row recipe is running (a function, not the variable, for the wrapper below to
    use: a step class defined in a script is pickled by value, with the globals its methods read,
    and a context variable does not pickle)."""
    return _IN_RECIPE.get()


def _applying_mappings(raw: ProcessMethod) -> ProcessMethod:
    """A step's own ``process`` as its public one: called from outside, it runs the whole row
    recipe (:meth:`Step.work`); called from inside it (``super().process``), it is the raw
    method, so mappings are never applied twice."""

    @functools.wraps(raw)
    def process(self: Step, inputs: list[Row]) -> Iterator[list[Row]]:
        if _in_recipe():
            yield from raw(self, inputs)
        else:
            from taskloom.html_table import Rows

            yield Rows(run_work(self.work(inputs)))

    process.__taskloom_raw__ = raw  # type: ignore[attr-defined]
    return process


StepColumns: TypeAlias = Sequence[str] | Mapping[str, bool]
"""Column names, or column name -> required."""


def columns_as_dict(columns: StepColumns) -> dict[str, bool]:
    """Normalise a column declaration to ``{name: required}``.

    A plain method is accepted too (``def inputs(self)`` without ``@property``), since that is an
    easy slip to make and its meaning is clear.
    """
    if callable(columns):
        columns = columns()
    if isinstance(columns, Mapping):
        return {str(k): bool(v) for k, v in columns.items()}
    if isinstance(columns, str):
        return {columns: True}
    return dict.fromkeys(columns, True)


class Step(Component, ABC):
    """Something that turns batches of rows into batches of rows.

    Subclasses declare ``inputs`` and ``outputs`` and implement ``process``; ``load`` and
    ``unload`` bracket the work (a pipeline calls them; standalone, you do).
    """

    default_name: ClassVar[str | None] = None
    """The step name when none is given and the class has no registry name of its own."""

    name: str = Field(
        default="",
        description="Unique name of the step; defaults to the registry name of its class.",
    )

    input_mappings: dict[str, str] = Field(
        default_factory=dict,
        description="Read a step input from another column: {'instruction': 'prompt'}.",
    )
    output_mappings: dict[str, str] = Field(
        default_factory=dict,
        description="Write a step output under another name: {'generation': 'answer'}.",
    )

    drives_itself: ClassVar[bool] = False
    """True for a step class whose ``process`` is itself a driver of :meth:`work` (``Task``)."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        own = cls.__dict__.get("process")
        if own is not None and not cls.__dict__.get("drives_itself", False) and not hasattr(own, "__taskloom_raw__"):
            type.__setattr__(cls, "process", _applying_mappings(own))

    @model_validator(mode="after")
    def _fill_name(self) -> Step:
        if not self.name:
            cls = type(self)
            # Bypass validate_assignment: this runs inside validation already.
            self.__dict__["name"] = cls.own_registry_name() or cls.default_name or kebab_case(cls.__name__)
        return self

    @property
    def inputs(self) -> StepColumns:
        """Columns this step reads. Override; the default is none."""
        return []

    @property
    def outputs(self) -> StepColumns:
        """Columns this step writes. Override; the default is none."""
        return []

    def required_inputs(self) -> list[str]:
        return [c for c, required in columns_as_dict(self.inputs).items() if required]

    def check_columns(self, rows: Sequence[Row]) -> None:
        """Raise :class:`MissingColumnError` for the first row that lacks a required column."""
        required = [(self.input_mappings.get(c, c), c) for c in self.required_inputs()]
        if not required:
            return
        for index, row in enumerate(rows):
            for column, own in required:
                if column not in row:
                    raise MissingColumnError(self.name, column, row.keys(), index, input_name=own)

    def map_inputs(self, rows: list[Row]) -> list[Row]:
        """Rows as the step sees them: mapped columns under the step's own input names.

        A column that already has the step's input name is set aside and put back by
        ``map_outputs``, so mapping ``{"instruction": "generation"}`` never loses the row's own
        ``instruction``.
        """
        if not self.input_mappings:
            return rows
        pairs = list(self.input_mappings.items())
        mapped = []
        for row in rows:
            view = dict(row)
            for own, source in pairs:
                if source in view and own != source:
                    if own in view:
                        view[_SHADOW + own] = view[own]
                    view[own] = view.pop(source)
            mapped.append(view)
        return mapped

    def map_outputs(self, rows: list[Row]) -> list[Row]:
        """Undo ``map_inputs`` and rename outputs per ``output_mappings``, in place.

        Outputs are renamed first, so an output may take the name an input was mapped from
        (a judge reading ``generation`` as its ``instruction`` and writing ``verdict``).
        """
        if not self.input_mappings and not self.output_mappings:
            return rows
        outputs = list(self.output_mappings.items())
        inputs = [(own, source) for own, source in self.input_mappings.items() if own != source]
        for row in rows:
            for old, new in outputs:
                if old in row:
                    row[new] = row.pop(old)
            for own, source in inputs:
                if own in row:
                    row[source] = row.pop(own)
                shadow = row.pop(_SHADOW + own, _MISSING)
                if shadow is not _MISSING:
                    row[own] = shadow
        return rows

    def columns_after(self, available: Sequence[str]) -> list[str]:
        """Columns a row has after this step, given those it had before (for pipeline checks).

        The default: everything that came in, plus the declared outputs under their mapped names.
        A step that drops or renames columns overrides this.
        """
        produced = [self.output_mappings.get(c, c) for c in columns_as_dict(self.outputs)]
        return list(dict.fromkeys([*available, *produced]))

    runs_in_thread: ClassVar[bool] = True
    """Whether a pipeline runs ``process`` in a worker thread (CPU-heavy or blocking steps).

    Cheap steps (renaming columns) set it to False and run on the event loop.
    """

    needs_input_order: ClassVar[bool] = False
    """Whether the step must see rows in source order (a deduplication keeping the first of each).

    A pipeline otherwise hands a step each row as soon as the steps before it finish it, in any
    order; for such a step it holds rows back until those before them have arrived.
    """

    needs_all_rows: ClassVar[bool] = False
    """Whether what the step makes of a row depends on the other rows (a deduplication keeps a row
    only if no earlier one repeats it; a measure over the whole dataset).

    An executor that splits the rows into shards runs such a step once, over every row in source
    order, between a phase of the steps before it and a phase of the steps after it.
    """

    _dropped: Counter[str] = PrivateAttr(default_factory=Counter)

    def drop(self, row: Row, reason: str) -> None:
        """Count ``row`` as left out of this step's output, and why (``rating is missing``).

        A step that filters calls it for each row it leaves out: the reasons and their counts are
        in the run's stats and summary (:meth:`dropped`). Override it to also keep the row
        somewhere (a side file); call ``super().drop`` there.
        """
        self._dropped[reason] += 1

    def dropped(self) -> dict[str, int]:
        """Rows left out so far, by reason."""
        return dict(self._dropped)

    def own_source(self) -> Source | None:
        """The rows this step makes from nothing when it starts a pipeline that has no source
        (Magpie with ``num_rows``); None for a step that reads rows."""
        return None

    def for_part(self) -> Step:
        """A copy to run over one part of the rows (a shard) beside others: it shares what ``load``
        acquired (a loaded model, an open client) and counts its own rows left out.

        A step whose other state must not be shared between parts run at once overrides it.
        """
        part = self.model_copy()
        part._dropped = Counter()
        return part

    def measured(self) -> dict[str, Any] | None:
        """What the step measured over every row it saw, as plain JSON data; None for nothing.

        Read once at the end of a run into its stats (``result.stats.steps[name].measured``),
        ``run.json``, the summary and the dataset card: a measure over the whole dataset (a
        judge's agreement with people) rather than a column of each row. A number is shown as
        it is; ``{"value": v, "ci95": [low, high]}`` as a value with its interval.
        """
        return None

    def __rshift__(self, other: Any) -> Any:
        from taskloom.pipeline.graph import Flow

        return Flow.of(self) >> other

    def __rrshift__(self, other: Any) -> Any:
        from taskloom.pipeline.graph import Flow

        return Flow.of(other) >> self

    def load(self) -> None:
        """Acquire what ``process`` needs (models, clients). Called once before processing."""

    def unload(self) -> None:
        """Release what ``load`` acquired."""

    def is_loaded(self) -> bool:
        """Whether what ``load`` acquires is held already; a pipeline that finds it so does not unload it."""
        return False

    @abstractmethod
    def process(self, inputs: list[Row]) -> Iterator[list[Row]]:
        """Yield lists of output rows for one batch of input rows.

        Write it for rows that carry the step's own column names: called on a step, it checks
        the columns and applies ``input_mappings`` / ``output_mappings`` around your code (it
        runs :meth:`work`), as every pipeline driver does.
        """

    def work(self, rows: list[Row]) -> RowWork:
        """The row recipe for one batch: check, map inputs, process, map outputs.

        A generator, so that every driver calls the same thing; a step that calls no LLM yields
        nothing and returns its rows at once. :class:`~taskloom.tasks.Task` adds the LLM calls.
        """
        self.check_columns(rows)
        mapped = self.map_inputs(list(rows))
        raw = getattr(type(self).process, "__taskloom_raw__", None)
        token = _IN_RECIPE.set(True)
        try:
            produced = raw(self, mapped) if raw is not None else self.process(mapped)
            out = [row for part in produced for row in part]
        finally:
            _IN_RECIPE.reset(token)
        return self.map_outputs(out)
        yield  # a generator with no calls to make

    def describe(self) -> dict[str, Any]:
        """Name, columns and runtime parameters: what ``taskloom tasks`` prints."""
        return {
            "name": self.name,
            "inputs": columns_as_dict(self.inputs),
            "outputs": columns_as_dict(self.outputs),
            "runtime_parameters": self.runtime_parameters_info(),
        }


class JoinStep(Step):
    """A step after several branches (``[b, c] >> join``) that decides how their rows meet.

    For each source row, ``join`` receives the rows every upstream branch made from it, one list
    per branch in the order the branches were given. Any other step after several branches gets
    those rows one after another (their union), as if one branch had made them all.
    """

    @abstractmethod
    def join(self, branches: list[list[Row]]) -> list[Row]:
        """The output rows for one source row, from each branch's rows for it."""

    def columns_after_branches(self, branches: Sequence[Sequence[str]]) -> list[str]:
        """Columns a row has after the join, from each branch's columns (for pipeline checks).

        The default treats the branches' columns as one set; a join that keeps only the first
        branch's row (``group-columns``) says so by overriding this.
        """
        return self.columns_after(list(dict.fromkeys(column for branch in branches for column in branch)))

    def process(self, inputs: list[Row]) -> Iterator[list[Row]]:
        # Outside a pipeline, or after a single step: each row is its own one-branch group.
        yield [out for row in inputs for out in self.join([[row]])]
