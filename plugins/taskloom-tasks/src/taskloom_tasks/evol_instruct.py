"""``evol-instruct``: evolve an instruction over several rounds of rewriting, keeping every round."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field

from taskloom.plugin import CallPlan, ChatType, Row, StepColumns
from taskloom_tasks.base import PromptedTask
from taskloom_tasks.parsing import clean_item, find_json
from taskloom_tasks.rounds import draw_mutation, read_rounds, rounds_plan

Operation = Literal["add-constraints", "deepen", "concretize", "increase-reasoning", "breadth"]

OPERATIONS: dict[str, str] = {
    "add-constraints": "add one more constraint or requirement the answer must satisfy.",
    "deepen": "make it ask for more depth: probe the underlying issue further, or ask about more of its aspects.",
    "concretize": "replace general ideas in it with more specific, concrete ones (a named case, real numbers, a "
    "precise setting).",
    "increase-reasoning": "if it can be solved in one obvious step, rework it so that answering needs several explicit "
    "steps of reasoning.",
    "breadth": "instead of rewriting it, write a brand-new instruction in the same domain, on a rarer topic, of "
    "similar length and difficulty.",
}
"""What each evolution asks the model to do, in the words the prompt uses."""

_LEAD_IN = re.compile(
    r"^\s*[*#_]*\s*(?:#?\s*)?(?:the\s+)?(?:rewritten|new|evolved|harder|created|final)\s+(?:instruction|prompt)\s*#?[*_]*\s*:?\s*",
    re.IGNORECASE,
)


def evolved_text(reply: str | None) -> str | None:
    """The instruction in one round's reply: JSON ``instruction``, or the text without lead-ins and quotes."""
    if not reply or not reply.strip():
        return None
    try:
        data = find_json(reply)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("instruction"), str):
        text = data["instruction"]
    elif reply.lstrip().startswith("{"):
        return None  # a JSON answer that was cut off or malformed: its text is not an instruction
    else:
        text = re.sub(r"^```[a-zA-Z]*\n|```$", "", reply.strip()).strip()
        text = _LEAD_IN.sub("", text).strip()
    text = clean_item(text) if "\n" not in text.strip() else text.strip()
    return text or None


class EvolInstruct(PromptedTask):
    """Make an instruction harder over ``num_evolutions`` rounds, each rewriting the last round's result.

    Each round applies one operation, drawn from ``operations`` with a generator seeded by
    ``seed``, the instruction, the generation and the round, so a rerun (or a resumed run)
    makes the same choices and finds every round in the cache. Outputs: ``evolved_instruction``
    (the last round), ``evolved_instructions`` (every round, in order) and ``mutations`` (the
    operation of each round). With ``num_generations`` > 1, each generation is its own chain.
    The raw output keeps every round's reply as JSON.
    """

    example: ClassVar[tuple[Row, Row] | None] = (
        {"instruction": "Write a poem."},
        {
            "evolved_instruction": "Write a poem about the sea in exactly four stanzas, then explain step by step "
            "how each stanza builds on the one before.",
            "evolved_instructions": [
                "Write a poem about the sea in exactly four stanzas.",
                "Write a poem about the sea in exactly four stanzas, then explain step by step how each stanza "
                "builds on the one before.",
            ],
            "mutations": ["add-constraints", "increase-reasoning"],
        },
    )
    registry_name: ClassVar[str | None] = "evol-instruct"
    template_name: ClassVar[str] = "evol-instruct"

    num_evolutions: int = Field(default=2, ge=1, le=10, description="Rounds of evolution per generation.")
    operations: list[Operation] = Field(
        default_factory=lambda: list(OPERATIONS),  # type: ignore[arg-type]
        min_length=1,
        description="Operations to draw from: add-constraints, deepen, concretize, increase-reasoning, breadth.",
    )
    seed: int = Field(default=0, description="Seeds the choice of operation per round.")

    @property
    def inputs(self) -> StepColumns:
        return ["instruction"]

    @property
    def outputs(self) -> StepColumns:
        return ["evolved_instruction", "evolved_instructions", "mutations", "model_name"]

    def template_variables(self) -> list[str]:
        return ["json", "instruction", "operation", "guidance"]

    def operation_for(self, instruction: str, generation: int, round_: int) -> str:
        return draw_mutation(self.operations, self.seed, instruction, generation, round_)

    def response_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"instruction": {"type": "string", "minLength": 8, "maxLength": 2000}},
            "required": ["instruction"],
        }

    def template_context(self, input: Row) -> dict[str, Any]:
        operation = self.operation_for(input["instruction"], 0, 0)
        return {"instruction": input["instruction"], "operation": operation, "guidance": OPERATIONS[operation]}

    def _round_chat(self, instruction: str, operation: str) -> ChatType:
        return self.chat(
            self.render(
                {"instruction": instruction},
                instruction=instruction,
                operation=operation,
                guidance=OPERATIONS[operation],
            )
        )

    def plan(self, input: Row, chat: ChatType) -> CallPlan:
        original = input["instruction"]
        return (
            yield from rounds_plan(
                start=original,
                num_generations=self.num_generations,
                num_rounds=self.num_evolutions,
                mutation_for=lambda g, round_: self.operation_for(original, g, round_),
                chat_for=self._round_chat,
                read=evolved_text,
                first_chat=chat,
            )
        )

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        evolved, operations = read_rounds(output, self.num_evolutions, evolved_text, "an instruction")
        return {"evolved_instruction": evolved[-1], "evolved_instructions": evolved, "mutations": operations}
