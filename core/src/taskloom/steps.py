"""Step: the unit a pipeline runs, with declared input and output columns.

Columns are declared, not discovered, so a pipeline can be checked before any row flows and a
missing column can be reported with the step's name instead of as a ``KeyError`` deep inside.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeAlias

from pydantic import Field, model_validator

from taskloom.component import Component, kebab_case
from taskloom.errors import MissingColumnError
from taskloom.typing import Row

StepColumns: TypeAlias = Sequence[str] | Mapping[str, bool]
"""Column names, or column name -> required."""


def columns_as_dict(columns: StepColumns) -> dict[str, bool]:
    """Normalise a column declaration to ``{name: required}``."""
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
        required = self.required_inputs()
        if not required:
            return
        for index, row in enumerate(rows):
            missing = [c for c in required if c not in row]
            if missing:
                raise MissingColumnError(self.name, missing[0], row.keys(), index)

    def load(self) -> None:
        """Acquire what ``process`` needs (models, clients). Called once before processing."""

    def unload(self) -> None:
        """Release what ``load`` acquired."""

    @abstractmethod
    def process(self, inputs: list[Row]) -> Iterator[list[Row]]:
        """Yield lists of output rows for one batch of input rows."""

    def describe(self) -> dict[str, Any]:
        """Name, columns and runtime parameters: what ``taskloom tasks`` prints."""
        return {
            "name": self.name,
            "inputs": columns_as_dict(self.inputs),
            "outputs": columns_as_dict(self.outputs),
            "runtime_parameters": self.runtime_parameters_info(),
        }
