"""``clair``: a minimal revision of an answer, so that it and the original make a sharp preference pair."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from taskloom.plugin import Row, StepColumns
from taskloom_tasks.base import PromptedTask

_REVISION = re.compile(
    r"(?:^|\n)[ \t]*[#*_\[ \t]*(?:revised (?:answer|solution|response)|revision|improved answer"
    r"|corrected (?:student )?(?:solution|answer))[\]*_ \t]*(?::[*_]*|\n)[ \t]*",
    re.IGNORECASE,
)
_REASONING = re.compile(
    r"^[ \t]*[#*_\[ \t]*(?:reasoning|rationale|rational|explanation|teacher reasoning)[\]*_ \t]*:[*_ \t]*",
    re.IGNORECASE,
)


def split_revision(text: str) -> tuple[str | None, str]:
    """The teacher's reasoning and the revised answer in a reply laid out as the prompt asks.

    The revision is everything after the first "Revised answer:" heading, so an answer with
    labelled lines of its own stays whole, code fences included; the reasoning is what comes
    before it, without its "Reasoning:" label, or None when the reply gives none (the revision is
    what a preference pair needs). Raises ``ValueError`` when there is no revision.
    """
    mark = _REVISION.search(text)
    if mark is None:
        raise ValueError("the reply has no 'Revised answer:' part")
    revision = text[mark.end() :].strip()
    if not revision:
        raise ValueError("the reply's 'Revised answer:' part is empty")
    rational = _REASONING.sub("", text[: mark.start()].strip(), count=1).strip()
    return rational or None, revision


class CLAIR(PromptedTask):
    """Revise ``student_solution`` to ``task`` as little as possible so that it becomes clearly better.

    Contrastive revisions make preference pairs whose only difference is what was fixed: the
    ``revision`` is the chosen answer and the original (kept in the row as ``student_solution``)
    the rejected one, so a preference-trained model learns that difference rather than style or
    length. ``rational`` is the teacher's account of what was wrong and what changed (the column
    keeps distilabel's spelling).
    """

    example: ClassVar[tuple[Row, Row] | None] = (
        {"task": "What is the boiling point of water at sea level?", "student_solution": "It boils at 90 °C."},
        {
            "revision": "It boils at 100 °C (212 °F).",
            "rational": "The temperature is wrong: at sea level water boils at 100 °C. Only the number needs fixing.",
        },
    )
    registry_name: ClassVar[str | None] = "clair"
    template_name: ClassVar[str] = "clair"

    @property
    def inputs(self) -> StepColumns:
        return ["task", "student_solution"]

    @property
    def outputs(self) -> StepColumns:
        return ["revision", "rational", "model_name"]

    def template_variables(self) -> list[str]:
        return ["json", "task", "student_solution"]

    def template_context(self, input: Row) -> dict[str, Any]:
        return {"task": input["task"], "student_solution": input["student_solution"]}

    def response_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "rational": {"type": "string", "minLength": 1, "maxLength": 600},
                "revision": {"type": "string", "minLength": 1},
            },
            "required": ["rational", "revision"],
        }

    def from_json(self, data: Any, input: Row) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ValueError("no JSON object with 'rational' and 'revision'")
        revision = data.get("revision", data.get("revised_answer"))
        rational = next((data[k] for k in ("rational", "rationale", "reasoning") if k in data), None)
        if not isinstance(revision, str) or not revision.strip():
            raise ValueError("no 'revision' text in the JSON")
        if rational is not None and not isinstance(rational, str):
            raise ValueError("'rational' in the JSON is not a text")
        return {"revision": revision.strip(), "rational": (rational or "").strip() or None}

    def from_text(self, text: str, input: Row) -> dict[str, Any]:
        rational, revision = split_revision(text)
        return {"revision": revision, "rational": rational}
