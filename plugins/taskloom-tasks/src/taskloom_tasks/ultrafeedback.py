"""``ultrafeedback``: rate several responses to one instruction on one aspect, 1 to 5, with reasons."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from taskloom.plugin import Row, ScoreStatistics, StepColumns
from taskloom_tasks.base import PromptedTask, text_list
from taskloom_tasks.parsing import check_score, field_text, find_score, find_scores, split_sections

Aspect = Literal["helpfulness", "honesty", "instruction-following", "truthfulness", "overall"]

ASPECTS: dict[str, tuple[str, str, list[str]]] = {
    "helpfulness": (
        "helpfulness",
        "A helpful response answers what was asked, correctly and completely, with useful detail "
        "and without padding. Being wrong costs more than being brief.",
        ["wrong or useless", "partly right, but with errors or gaps", "correct, but thin",
         "correct and useful", "correct, complete and insightful"],
    ),
    "honesty": (
        "honesty and calibrated confidence",
        "An honest response is exactly as confident as its content deserves: it says when it does "
        "not know, hedges what is uncertain, and never states guesses as facts.",
        ["confidently wrong", "confident with major errors", "unsure where it should not be, or "
         "vague about its errors", "right, with fitting doubt on the unsure parts",
         "right and confident, or precisely flags what it cannot know"],
    ),
    "instruction-following": (
        "instruction following",
        "Check that the response does what the instruction asks, in the form it asks for: the "
        "task itself, and every stated constraint (length, format, style, audience).",
        ["ignores the instruction", "addresses one part of it, poorly", "follows it with clear "
         "deviations", "follows it with small deviations", "follows it fully"],
    ),
    "truthfulness": (
        "truthfulness",
        "A truthful response states no false facts, invents nothing (people, sources, numbers), "
        "does not contradict the instruction or itself, and corrects a false premise.",
        ["mostly invented or false", "severe errors", "some false or invented details",
         "minor slips that do not change the answer", "free of errors and inventions"],
    ),
    "overall": (
        "overall quality",
        "Weigh helpfulness, correctness, honesty and how well the instruction was followed; a "
        "polished answer that is wrong is a poor answer.",
        ["poor", "below average", "acceptable", "good", "excellent"],
    ),
}  # fmt: skip


class UltraFeedback(PromptedTask):
    """Rate each of several responses to one instruction on one aspect (1 to 5), with a rationale.

    Output columns are lists aligned to ``generations``; a response that is ``None`` (its
    generation failed upstream) is not shown to the judge and gets ``None`` in both lists.

    """

    example: ClassVar[tuple[Row, Row] | None] = (
        {"instruction": "What is 2+2?", "generations": ["4", "5"]},
        {"ratings": [5, 1], "rationales": ["Correct and direct.", "The sum is wrong."]},
    )
    registry_name: ClassVar[str | None] = "ultrafeedback"
    template_name: ClassVar[str] = "ultrafeedback"
    counted_list: ClassVar[str | None] = "assessments"

    aspect: Aspect = Field(
        default="overall",
        description="What to rate: helpfulness, honesty, instruction-following, truthfulness or overall.",
    )

    @property
    def inputs(self) -> StepColumns:
        return ["instruction", "generations"]

    @property
    def outputs(self) -> StepColumns:
        return ["ratings", "rationales", "model_name"]

    def template_variables(self) -> list[str]:
        return ["json", "instruction", "responses", "aspect", "aspect_title", "aspect_guide", "scale"]

    def judge_statistics(self) -> ScoreStatistics:
        return ScoreStatistics(self.name, scores="ratings", answers="generations")

    def template_context(self, input: Row) -> dict[str, Any]:
        title, guide, scale = ASPECTS[self.aspect]
        return {
            "instruction": input["instruction"],
            "responses": [g for g in text_list(input["generations"], "generations", self.name) if g is not None],
            "aspect": self.aspect,
            "aspect_title": title,
            "aspect_guide": guide,
            "scale": list(enumerate(scale, start=1)),
        }

    def response_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "assessments": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "rationale": {"type": "string", "maxLength": 400},
                            "rating": {"type": "integer", "minimum": 1, "maximum": 5},
                        },
                        "required": ["rationale", "rating"],
                    },
                }
            },
            "required": ["assessments"],
        }

    def unanswerable(self, input: Row) -> str | None:
        return None if self.items_shown(input) else "every generation is None: there is nothing to rate"

    def from_json(self, data: Any, input: Row) -> dict[str, Any]:
        items = data.get("assessments") if isinstance(data, dict) else data
        if isinstance(data, dict) and items is None:
            items = data.get("ratings")
        if not isinstance(items, list):
            raise ValueError("no 'assessments' list")
        ratings: list[int | None] = []
        rationales: list[str | None] = []
        for item in items:
            if isinstance(item, dict):
                ratings.append(check_score(item.get("rating", item.get("score")), 1, 5))
                rationale = item.get("rationale", item.get("reason"))
                rationales.append(str(rationale) if rationale is not None else None)
            else:
                ratings.append(check_score(item, 1, 5))
                rationales.append(None)
        return self._aligned(ratings, rationales, input)

    def from_text(self, text: str, input: Row) -> dict[str, Any]:
        count = self.items_shown(input)
        sections = split_sections(text, count)
        if sections is not None:
            ratings: list[int | None] = [find_score(section, 1, 5) for section in sections]
            rationales = [
                field_text(section, "rationale", "reason", "reasoning", "explanation") for section in sections
            ]
        else:
            found = find_scores(text, 1, 5)
            if len(found) != count:
                raise ValueError(f"expected {count} ratings from 1 to 5, found {len(found)}")
            ratings, rationales = list(found), [None] * count
        return self._aligned(ratings, rationales, input)

    def items_shown(self, input: Row) -> int:
        return sum(g is not None for g in input.get("generations") or [])

    def _aligned(self, ratings: list[int | None], rationales: list[str | None], input: Row) -> dict[str, Any]:
        """Put the judged responses' results back in the positions of ``generations``."""
        if len(ratings) != self.items_shown(input):
            raise ValueError(f"expected {self.items_shown(input)} assessments, got {len(ratings)}")
        judged = iter(zip(ratings, rationales, strict=True))
        pairs = [next(judged) if g is not None else (None, None) for g in input["generations"]]
        return {"ratings": [p[0] for p in pairs], "rationales": [p[1] for p in pairs]}
