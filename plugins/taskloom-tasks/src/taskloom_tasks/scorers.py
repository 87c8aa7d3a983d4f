"""``quality-scorer`` and ``complexity-scorer``: one call scores a whole list, one score per item."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field, model_validator

from taskloom.plugin import Row, ScoreStatistics, StepColumns
from taskloom_tasks.base import PromptedTask, text_list
from taskloom_tasks.parsing import check_score, find_score, split_sections


class _ListScorer(PromptedTask):
    """Scores every item of one list column in one call; ``scores`` is aligned to the list."""

    items_column: ClassVar[str]
    counted_list: ClassVar[str | None] = "scores"
    item_name: ClassVar[str]

    low: int = Field(default=1, description="The lowest score.")
    high: int = Field(default=6, description="The highest score.")

    @model_validator(mode="after")
    def _check_scale(self) -> _ListScorer:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self

    @property
    def outputs(self) -> StepColumns:
        return ["scores", "model_name"]

    def judge_statistics(self) -> ScoreStatistics:
        return ScoreStatistics(self.name, scores="scores", answers=self.items_column)

    def _items(self, input: Row) -> list[Any]:
        return text_list(input[self.items_column], self.items_column, self.name)

    def response_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "scores": {"type": "array", "items": {"type": "integer", "minimum": self.low, "maximum": self.high}}
            },
            "required": ["scores"],
        }

    def unanswerable(self, input: Row) -> str | None:
        items = self._items(input)
        missing = [str(i + 1) for i, item in enumerate(items) if item is None]
        if not items:
            return f"column {self.items_column!r} is empty: there is nothing to score"
        return f"{self.item_name} {', '.join(missing)} of {self.items_column!r} is missing (None)" if missing else None

    def items_shown(self, input: Row) -> int:
        return len(self._items(input))

    def template_variables(self) -> list[str]:
        return ["json", self.items_column, "low", "high"]

    def template_context(self, input: Row) -> dict[str, Any]:
        return {self.items_column: self._items(input), "low": self.low, "high": self.high}

    def _checked(self, scores: list[Any], input: Row) -> dict[str, Any]:
        expected = len(self._items(input))
        if len(scores) != expected:
            raise ValueError(f"expected {expected} scores, got {len(scores)}")
        return {"scores": [check_score(s, self.low, self.high) for s in scores]}

    def from_json(self, data: Any, input: Row) -> dict[str, Any]:
        scores = data.get("scores") if isinstance(data, dict) else data
        if not isinstance(scores, list):
            raise ValueError("no 'scores' list")
        return self._checked(scores, input)

    def from_text(self, text: str, input: Row) -> dict[str, Any]:
        expected = len(self._items(input))
        sections = split_sections(text, expected, names=r"response|instruction|item|text|answer")
        if sections is not None:
            # "Response 1: 4" — the number after the heading's own index.
            scores = [
                find_score(re.sub(r"^[^\d]*\d+\s*[\]):.\-]?", "", s.strip(), count=1), self.low, self.high)
                for s in sections
            ]
        else:
            scores = []
            for line in text.splitlines():  # one score per line, lines without one skipped
                try:
                    scores.append(find_score(line, self.low, self.high))
                except ValueError:
                    continue
        return self._checked(scores, input)


class QualityScorer(_ListScorer):
    """Score the quality of several responses to one instruction, in one call."""

    example: ClassVar[tuple[Row, Row] | None] = (
        {"instruction": "Name a prime number.", "responses": ["7", "9 is prime."]},
        {"scores": [5, 1]},
    )
    registry_name: ClassVar[str | None] = "quality-scorer"
    template_name: ClassVar[str] = "quality-scorer"
    items_column: ClassVar[str] = "responses"
    item_name: ClassVar[str] = "response"

    @property
    def inputs(self) -> StepColumns:
        return ["instruction", "responses"]

    def template_variables(self) -> list[str]:
        return [*super().template_variables(), "instruction"]

    def template_context(self, input: Row) -> dict[str, Any]:
        return {**super().template_context(input), "instruction": input["instruction"]}


class ComplexityScorer(_ListScorer):
    """Score how complex each of several instructions is, in one call."""

    example: ClassVar[tuple[Row, Row] | None] = (
        {"instructions": ["Say hello.", "Prove there are infinitely many primes, then restate the proof as a sonnet."]},
        {"scores": [1, 6]},
    )
    registry_name: ClassVar[str | None] = "complexity-scorer"
    template_name: ClassVar[str] = "complexity-scorer"
    items_column: ClassVar[str] = "instructions"
    item_name: ClassVar[str] = "instruction"

    @property
    def inputs(self) -> StepColumns:
        return ["instructions"]
