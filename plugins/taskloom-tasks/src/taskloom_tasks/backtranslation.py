"""``instruction-backtranslation``: how well a response answers an instruction, for filtering pairs."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from taskloom.plugin import Row, StepColumns
from taskloom_tasks.base import PromptedTask
from taskloom_tasks.parsing import check_score, field_text, find_score


class InstructionBacktranslation(PromptedTask):
    """Score (1 to 5) how well ``generation`` serves as an assistant's answer to ``instruction``.

    The curation step of instruction backtranslation: pairs scoring 5 (or 4 and up) are kept.

    """

    example: ClassVar[tuple[Row, Row] | None] = (
        {"instruction": "How do I boil an egg?", "generation": "Simmer it for 9 minutes, then cool it in cold water."},
        {"score": 5, "reason": "Direct, complete and focused."},
    )
    registry_name: ClassVar[str | None] = "instruction-backtranslation"
    template_name: ClassVar[str] = "instruction-backtranslation"

    @property
    def inputs(self) -> StepColumns:
        return ["instruction", "generation"]

    @property
    def outputs(self) -> StepColumns:
        return ["score", "reason", "model_name"]

    def template_variables(self) -> list[str]:
        return ["json", "instruction", "generation"]

    def template_context(self, input: Row) -> dict[str, Any]:
        return {"instruction": input["instruction"], "generation": input["generation"]}

    def response_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "reason": {"type": "string", "maxLength": 500},
                "score": {"type": "integer", "minimum": 1, "maximum": 5},
            },
            "required": ["reason", "score"],
        }

    def from_json(self, data: Any, input: Row) -> dict[str, Any]:
        if not isinstance(data, dict) or ("score" not in data and "rating" not in data):
            raise ValueError("no 'score' in the JSON")
        reason = data.get("reason", data.get("rationale"))
        return {
            "score": check_score(data.get("score", data.get("rating")), 1, 5),
            "reason": str(reason) if reason is not None else None,
        }

    def from_text(self, text: str, input: Row) -> dict[str, Any]:
        score = find_score(text, 1, 5)
        reason = field_text(text, "reason", "reasoning", "rationale", "explanation")
        if reason is None:  # the prose before the final score line
            reason = re.split(r"\n[^\n]*\bscore\b[^\n]*$", text.strip(), flags=re.IGNORECASE)[0].strip() or None
        return {"score": score, "reason": reason}
