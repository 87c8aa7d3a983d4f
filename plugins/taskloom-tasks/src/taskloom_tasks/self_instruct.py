"""``self-instruct``: new instructions from a topic, or from seed instructions."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from taskloom.plugin import Row, StepColumns
from taskloom_tasks.base import PromptedTask, text_list
from taskloom_tasks.parsing import list_items


class SelfInstruct(PromptedTask):
    """Write ``num_instructions`` new instructions about a row's ``topic``, or like its ``seed_instructions``.

    ``source="topic"`` reads the ``topic`` column (a string); ``source="seeds"`` reads
    ``seed_instructions`` (a list of example instructions). The ``instructions`` column is the
    list of new ones, numbering and quotes removed, duplicates dropped.

    """

    example: ClassVar[tuple[Row, Row] | None] = (
        {"topic": "home composting"},
        {
            "instructions": [
                "Explain why my compost smells and how to fix it.",
                "Plan a compost bin for a small balcony.",
            ]
        },
    )
    registry_name: ClassVar[str | None] = "self-instruct"
    template_name: ClassVar[str] = "self-instruct"

    source: Literal["topic", "seeds"] = Field(
        default="topic", description="Read the 'topic' column, or the 'seed_instructions' list column."
    )
    num_instructions: int = Field(default=5, ge=1, le=50, description="How many instructions to write per row.")
    application: str | None = Field(
        default=None, description="What the instructions are for (an app, an audience), in a phrase."
    )
    criteria: str | None = Field(default=None, description="Extra requirements for the instructions, in plain words.")

    @property
    def inputs(self) -> StepColumns:
        return ["topic"] if self.source == "topic" else ["seed_instructions"]

    @property
    def outputs(self) -> StepColumns:
        return ["instructions", "model_name"]

    def template_variables(self) -> list[str]:
        return ["json", "count", "topic", "seeds", "application", "criteria"]

    def template_context(self, input: Row) -> dict[str, Any]:
        seeds = (
            text_list(input["seed_instructions"], "seed_instructions", self.name) if self.source == "seeds" else None
        )
        return {
            "count": self.num_instructions,
            "topic": input.get("topic") if self.source == "topic" else None,
            "seeds": seeds,
            "application": self.application,
            "criteria": self.criteria,
        }

    def response_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "instructions": {
                    "type": "array",
                    "items": {"type": "string", "minLength": 8, "maxLength": 400},
                    "minItems": self.num_instructions,
                    "maxItems": self.num_instructions,
                }
            },
            "required": ["instructions"],
        }

    def _checked(self, items: list[str]) -> dict[str, Any]:
        kept = [item for item in dict.fromkeys(i.strip() for i in items) if len(item) >= 3]
        if not kept:
            raise ValueError("the reply holds no instructions")
        return {"instructions": kept[: self.num_instructions]}

    def from_json(self, data: Any, input: Row) -> dict[str, Any]:
        items = data.get("instructions") if isinstance(data, dict) else data
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ValueError("no 'instructions' list of strings")
        return self._checked(items)

    def from_text(self, text: str, input: Row) -> dict[str, Any]:
        lines = list_items(text)
        # A lead-in such as "Here are 5 instructions:" is not an instruction.
        return self._checked([line for line in lines if not line.rstrip().endswith(":")])
