"""``rubric-judge``: a general judge whose criteria and answer schema the user supplies."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from taskloom.plugin import OutputSchema, Row, StepColumns
from taskloom_tasks.base import PromptedTask
from taskloom_tasks.schema_check import check_object

DEFAULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rationale": {"type": "string", "description": "why, in a few sentences", "maxLength": 600},
        "score": {
            "type": "integer",
            "minimum": 1,
            "maximum": 5,
            "description": "1 (fails the criteria) to 5 (fully meets them)",
        },
    },
    "required": ["rationale", "score"],
}


class RubricJudge(PromptedTask):
    """Judge rows against your own criteria; each property of your answer schema becomes a column.

    ``output_schema`` is a pydantic model class or a JSON schema of an object (default: a
    ``rationale`` and a 1-5 ``score``). Answers are checked against it: required keys, types,
    ``enum``, ``minimum``/``maximum``. ``columns`` are the row columns shown to the judge.

    """

    example: ClassVar[tuple[Row, Row] | None] = (
        {"instruction": "Reply to a customer asking for a refund.", "generation": "No."},
        {"rationale": "Curt and unhelpful.", "score": 1},
    )
    registry_name: ClassVar[str | None] = "rubric-judge"
    template_name: ClassVar[str] = "rubric-judge"

    criteria: str = Field(description="What to judge, in plain words (a rubric, a checklist, a scale).")
    output_schema: OutputSchema = Field(
        default_factory=lambda: dict(DEFAULT_SCHEMA),
        description="JSON schema of the judge's answer (an object); a pydantic model class is accepted too.",
    )
    columns: list[str] = Field(
        default_factory=lambda: ["instruction", "generation"], description="Row columns shown to the judge, in order."
    )

    @model_validator(mode="after")
    def _check_schema(self) -> RubricJudge:
        properties = self.output_schema.get("properties")
        if self.output_schema.get("type", "object") != "object" or not isinstance(properties, dict) or not properties:
            raise ValueError("output_schema must be a JSON schema of an object with properties.")
        clash = sorted(set(properties) & set(self.columns))
        if clash:
            raise ValueError(f"output_schema properties {clash} would overwrite the input columns of the same name.")
        return self

    @property
    def inputs(self) -> StepColumns:
        return list(self.columns)

    @property
    def outputs(self) -> StepColumns:
        return [*self.output_schema["properties"], "model_name"]

    def template_variables(self) -> list[str]:
        return ["json", "criteria", "fields", "answer_keys", *self.columns]

    def template_context(self, input: Row) -> dict[str, Any]:
        properties = self.output_schema["properties"]
        return {
            "criteria": self.criteria,
            "fields": [(column, input[column]) for column in self.columns],
            "answer_keys": [(key, _describe(spec)) for key, spec in properties.items()],
            **{column: input[column] for column in self.columns},
        }

    def response_schema(self) -> dict[str, Any]:
        return self.output_schema

    def from_json(self, data: Any, input: Row) -> dict[str, Any]:
        return check_object(data, self.output_schema)

    def from_text(self, text: str, input: Row) -> dict[str, Any]:
        raise ValueError("the reply holds no JSON object following output_schema")


def _describe(spec: Any) -> str:
    """A short reminder of a property's type and range for the prompt."""
    if not isinstance(spec, dict):
        return ""
    parts = [str(spec["description"])] if spec.get("description") else []
    if "enum" in spec:
        parts.append("one of " + ", ".join(repr(v) for v in spec["enum"]))
    elif spec.get("type") in {"integer", "number"}:
        bounds = [
            f"{name} {spec[key]}" for key, name in (("minimum", "at least"), ("maximum", "at most")) if key in spec
        ]
        parts.append(" ".join([f"an {spec['type']}", *bounds]) if bounds else f"an {spec['type']}")
    elif spec.get("type"):
        parts.append(f"a {spec['type']}")
    return "; ".join(parts)
