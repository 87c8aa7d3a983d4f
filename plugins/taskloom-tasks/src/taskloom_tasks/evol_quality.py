"""``evol-quality``: improve a response over several rounds of rewriting, the instruction left as it is."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field

from taskloom.plugin import CallPlan, ChatType, Row, StepColumns
from taskloom_tasks.base import PromptedTask
from taskloom_tasks.parsing import find_json
from taskloom_tasks.rounds import draw_mutation, read_rounds, rounds_plan

QualityOperation = Literal["helpfulness", "relevance", "depth", "creativity", "detail"]

QUALITY_OPERATIONS: dict[str, str] = {
    "helpfulness": "make it more useful to this user: answer what they actually need first and most directly, and "
    "add any practical information they would otherwise have to ask for.",
    "relevance": "make every part of it bear on the request: cut or rework what strays from it, and cover anything "
    "the request asked for that the answer skips.",
    "depth": "go further into the subject: explain the reasons behind what it says, and add the nuances, trade-offs "
    "or caveats an expert would mention.",
    "creativity": "make it more engaging and original, with a fitting example, analogy or fresher phrasing, without "
    "giving up any accuracy.",
    "detail": "replace what stays general with concrete specifics: steps, quantities, names, worked examples.",
}
"""What each rewrite asks the model to do, in the words the prompt uses."""

_LEAD_IN = re.compile(
    r"^\s*[*#_]*\s*(?:here\s+is\s+)?(?:the\s+|an?\s+|my\s+)?(?:improved|revised|rewritten|new|evolved|better|final)\s+"
    r"(?:version\s+of\s+the\s+)?(?:answer|response)\s*(?:#\s*:?|[*_]*\s*:)[*_]*[ \t]*\n?",
    re.IGNORECASE,
)
_WRAPPED = re.compile(r'^\s*\{\s*"response"', re.IGNORECASE)


def evolved_response(reply: str | None) -> str | None:
    """The answer in one round's reply: JSON ``response``, or the text without a lead-in.

    A reply is an answer, so it is kept as written (code blocks, lists, even JSON the user asked
    for); only the wrapper of a structured reply and a label such as "Improved answer:" are
    removed. A wrapper that was cut off (``{"response": "...`` without its end) holds no answer.
    """
    if not reply or not reply.strip():
        return None
    if _WRAPPED.match(reply):
        try:
            data = find_json(reply)
        except ValueError:
            return None
        text = data.get("response") if isinstance(data, dict) else None
        if not isinstance(text, str):
            return None
    else:
        text = _LEAD_IN.sub("", reply.strip(), count=1)
    return text.strip() or None


class EvolQuality(PromptedTask):
    """Rewrite ``response`` into a better answer to ``instruction`` over ``num_evolutions`` rounds.

    Each round rewrites the previous round's answer along one direction (more helpful, more
    relevant, deeper, more creative, more detailed), drawn from ``operations`` with a generator
    seeded by ``seed``, the row's texts, the generation and the round, so a rerun makes the same
    choices and finds every round in the cache. The instruction is never changed, which is what
    makes the result a better answer to the same question rather than a new pair. Outputs:
    ``evolved_response`` (the last round), or with ``store_evolutions`` ``evolved_responses``
    (every round, in order, led by the original with ``include_original_response``), and
    ``mutations`` (the direction of each round). With ``num_generations`` > 1, each generation
    is its own chain. The raw output keeps every round's reply as JSON.
    """

    example: ClassVar[tuple[Row, Row] | None] = (
        {"instruction": "How do I keep a basil plant alive indoors?", "response": "Water it."},
        {
            "evolved_response": "Keep it on your sunniest windowsill, since indoors light rather than water is "
            "what basil usually lacks, and water it only when the top centimetre of soil is dry: soggy soil rots its "
            "roots.",
            "mutations": ["depth", "relevance"],
        },
    )
    registry_name: ClassVar[str | None] = "evol-quality"
    template_name: ClassVar[str] = "evol-quality"

    num_evolutions: int = Field(default=2, ge=1, le=10, description="Rounds of rewriting per generation.")
    store_evolutions: bool = Field(
        default=False,
        description="Write every round's answer to 'evolved_responses' instead of only the last to 'evolved_response'.",
    )
    include_original_response: bool = Field(
        default=False, description="With store_evolutions, start 'evolved_responses' with the original response."
    )
    operations: list[QualityOperation] = Field(
        default_factory=lambda: list(QUALITY_OPERATIONS),  # type: ignore[arg-type]
        min_length=1,
        description="Directions to draw from: helpfulness, relevance, depth, creativity, detail.",
    )
    seed: int = Field(default=0, description="Seeds the choice of direction per round.")

    @property
    def inputs(self) -> StepColumns:
        return ["instruction", "response"]

    @property
    def outputs(self) -> StepColumns:
        evolved = "evolved_responses" if self.store_evolutions else "evolved_response"
        return [evolved, "mutations", "model_name"]

    def template_variables(self) -> list[str]:
        return ["json", "instruction", "response", "operation", "guidance"]

    def operation_for(self, instruction: str, response: str, generation: int, round_: int) -> str:
        return draw_mutation(self.operations, self.seed, instruction, response, generation, round_)

    def response_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"response": {"type": "string", "minLength": 1}},
            "required": ["response"],
        }

    def template_context(self, input: Row) -> dict[str, Any]:
        operation = self.operation_for(input["instruction"], input["response"], 0, 0)
        return {
            "instruction": input["instruction"],
            "response": input["response"],
            "operation": operation,
            "guidance": QUALITY_OPERATIONS[operation],
        }

    def _round_chat(self, instruction: str, response: str, operation: str) -> ChatType:
        context = {"instruction": instruction, "response": response}
        return self.chat(self.render(context, **context, operation=operation, guidance=QUALITY_OPERATIONS[operation]))

    def plan(self, input: Row, chat: ChatType) -> CallPlan:
        instruction, original = input["instruction"], input["response"]
        return (
            yield from rounds_plan(
                start=original,
                num_generations=self.num_generations,
                num_rounds=self.num_evolutions,
                mutation_for=lambda g, round_: self.operation_for(instruction, original, g, round_),
                chat_for=lambda response, operation: self._round_chat(instruction, response, operation),
                read=evolved_response,
                first_chat=chat,
            )
        )

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        evolved, operations = read_rounds(output, self.num_evolutions, evolved_response, "an answer")
        if not self.store_evolutions:
            return {"evolved_response": evolved[-1], "mutations": operations}
        original = (input or {}).get("response")
        kept = [original, *evolved] if self.include_original_response else evolved
        return {"evolved_responses": kept, "mutations": operations}
