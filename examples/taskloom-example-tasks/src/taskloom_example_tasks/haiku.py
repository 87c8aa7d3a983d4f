"""``haiku``: a topic in, a three-line poem out."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from taskloom import Task
from taskloom.plugin import ChatType, Row

_SYSTEM = (
    "You are a poet who writes only haiku. Answer with the poem alone: exactly three short "
    "lines of roughly five, seven and five syllables, with no title, no quotes and no comment."
)


class HaikuTask(Task):
    """Write a haiku (three lines) about the row's ``topic``.

    An answer that is not three lines once blank lines are dropped fails to parse: its
    ``haiku`` column is None and the raw answer stays in ``distilabel_metadata``.
    """

    registry_name: ClassVar[str | None] = "haiku"

    system_prompt: str = Field(default=_SYSTEM, description="System message that sets the poem's form.")

    @property
    def inputs(self) -> list[str]:
        return ["topic"]

    @property
    def outputs(self) -> list[str]:
        return ["haiku", "model_name"]

    def format_input(self, input: Row) -> ChatType:
        topic = str(input["topic"]).strip()
        return [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": f"Topic: {topic}\nWrite one haiku about it."},
        ]

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        return {"haiku": parse_haiku(output)}


def parse_haiku(text: str | None) -> str | None:
    """Return the poem as three stripped lines joined by newlines; ValueError otherwise.

    Code fences and blank lines around or between the lines are tolerated, since models add
    them often; anything that still is not three lines is rejected.
    """
    if text is None:
        return None
    lines = [line.strip() for line in text.strip().splitlines()]
    lines = [line for line in lines if line and not line.startswith("```")]
    if len(lines) != 3:
        raise ValueError(f"a haiku has 3 lines, this answer has {len(lines)}")
    return "\n".join(lines)
