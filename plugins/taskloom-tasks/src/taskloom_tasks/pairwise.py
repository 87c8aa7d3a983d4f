"""``pairwise-judge``: which of two responses is better, optionally asked in both orders."""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from pydantic import Field

from taskloom.plugin import Call, CallPlan, ChatType, GenerateOutput, Row, StepColumns, VerdictStatistics
from taskloom_tasks.base import PromptedTask, replies_json, text_list, token_sums
from taskloom_tasks.verdicts import Verdict, find_verdict, swap

_VERDICT_LINE = re.compile(r"^[\s*#_>]*(?:(?:final\s+)?verdict\b.*|\[\[\s*[ABC]\s*\]\][\s*.]*)$", re.IGNORECASE)
"""A closing line that only gives the verdict: "Verdict: A", "**Final verdict:** [[B]]", "[[C]]"."""

_ORDERS = ("a_b", "b_a")
"""Keys of the two replies in the raw output when both orders are asked."""


class PairwiseJudge(PromptedTask):
    """Compare two responses to an instruction: verdict ``"A"``, ``"B"`` or ``"tie"``, with a rationale.

    Judges favour whichever response they read first more often than chance. With
    ``both_orders=True`` the pair is also shown swapped (both requests at once); the verdicts are
    mapped back to the original order, ``orders_agree`` says whether they match, and a
    disagreement counts as ``"tie"``. The raw output then holds both replies as JSON
    (``{"a_b": ..., "b_a": ...}``).

    """

    example: ClassVar[tuple[Row, Row] | None] = (
        {"instruction": "What is 2+2?", "generations": ["4", "5"]},
        {"verdict": "A", "rationale": "A is correct; B is not.", "orders_agree": None},
    )
    registry_name: ClassVar[str | None] = "pairwise-judge"
    template_name: ClassVar[str] = "pairwise-judge"

    both_orders: bool = Field(
        default=False, description="Also ask with the responses swapped, to cancel position bias."
    )
    allow_tie: bool = Field(default=True, description="Let the judge answer 'tie'.")
    criteria: str | None = Field(default=None, description="Extra criteria for the judge, in plain words.")

    @property
    def inputs(self) -> StepColumns:
        return ["instruction", "generations"]

    @property
    def outputs(self) -> StepColumns:
        return ["verdict", "rationale", "orders_agree", "model_name"]

    def template_variables(self) -> list[str]:
        return ["json", "instruction", "response_a", "response_b", "allow_tie", "criteria"]

    def judge_statistics(self) -> VerdictStatistics:
        return VerdictStatistics(self.name, verdict="verdict", answers="generations", orders_agree="orders_agree")

    def _pair(self, input: Row) -> list[Any]:
        pair = text_list(input["generations"], "generations", self.name)
        if len(pair) != 2:
            raise ValueError(f"task {self.name!r}: column 'generations' must hold exactly 2 responses, got {len(pair)}")
        return pair

    def template_context(self, input: Row) -> dict[str, Any]:
        first, second = self._pair(input)
        return {
            "instruction": input["instruction"],
            "response_a": first,
            "response_b": second,
            "allow_tie": self.allow_tie,
            "criteria": self.criteria,
        }

    def unanswerable(self, input: Row) -> str | None:
        missing = [label for label, response in zip("AB", self._pair(input), strict=True) if response is None]
        return f"response {' and '.join(missing)} is missing (None)" if missing else None

    def plan(self, input: Row, chat: ChatType) -> CallPlan:
        if not self.both_orders or self.unanswerable(input) is not None:
            return (yield from super().plan(input, chat))
        first, second = self._pair(input)
        swapped = self.chat(self.render(input, response_a=second, response_b=first))
        n = self.num_generations
        straight, reverse = yield [Call(chat, n), Call(swapped, n)]
        texts: list[str | None] = []
        for i in range(n):
            a_b, b_a = straight["generations"][i], reverse["generations"][i]
            texts.append(
                None if a_b is None and b_a is None else replies_json(dict(zip(_ORDERS, (a_b, b_a), strict=True)))
            )
        error = straight.get("error") or reverse.get("error")
        output: GenerateOutput = {"generations": texts, "statistics": token_sums([straight, reverse], n)}
        if error:
            output["error"] = error
        return output

    def response_schema(self) -> dict[str, Any]:
        verdicts = ["A", "B", "tie"] if self.allow_tie else ["A", "B"]
        return {
            "type": "object",
            "properties": {
                "rationale": {"type": "string", "maxLength": 600},
                "verdict": {"type": "string", "enum": verdicts},
            },
            "required": ["rationale", "verdict"],
        }

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        if not self.both_orders:
            return {**self._one(output or ""), "orders_agree": None}
        replies = json.loads(output or "null")
        if not isinstance(replies, dict) or set(replies) != set(_ORDERS):
            raise ValueError("expected the replies of both orders")
        if replies["a_b"] is None or replies["b_a"] is None:
            raise ValueError("one of the two orders got no reply")
        straight = self._one(replies["a_b"])
        reverse = self._one(replies["b_a"])
        back: Verdict = swap(reverse["verdict"])
        agree = straight["verdict"] == back
        return {
            "verdict": straight["verdict"] if agree else "tie",
            "rationale": straight["rationale"],
            "orders_agree": agree,
        }

    def _one(self, text: str) -> dict[str, Any]:
        return super().format_output(text)

    def from_json(self, data: Any, input: Row) -> dict[str, Any]:
        if not isinstance(data, dict) or "verdict" not in data:
            raise ValueError("no 'verdict' in the JSON")
        rationale = data.get("rationale")
        return {
            "verdict": find_verdict(str(data["verdict"]), self.allow_tie),
            "rationale": str(rationale) if rationale is not None else None,
        }

    def from_text(self, text: str, input: Row) -> dict[str, Any]:
        verdict = find_verdict(text, self.allow_tie)
        lines = text.strip().splitlines()
        if len(lines) > 1 and _VERDICT_LINE.match(lines[-1]):  # the closing "Verdict: A" is not the rationale
            lines = lines[:-1]
        return {"verdict": verdict, "rationale": "\n".join(lines).strip() or None}
