"""``conversation``: a multi-turn dialogue between a simulated user and an assistant.

The user is a model asked to play a person (a persona, a topic to raise, or an opening
instruction given by the row); the assistant is the task's LLM, or the same model. Every turn
is one cached request, so a run killed mid-conversation resumes where it stopped: the turns
already written are read from the cache, which is keyed by the conversation so far, and only
the missing ones are paid for.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field, PrivateAttr, field_validator

from taskloom.plugin import (
    LLM,
    Call,
    CallPlan,
    Chat,
    ChatType,
    GenerateOutput,
    Row,
    RowInputError,
    StepColumns,
    Task,
    compile_template,
)
from taskloom_synth.dialogues import Dialogues, read_dialogue, stripped
from taskloom_synth.seeds import seeded
from taskloom_synth.speakers import Speakers

USER_ROLE_PROMPT = """\
You are playing a person who is chatting with an AI assistant.
{%- if persona %} You are this person: {{ persona }}{% endif %}
{%- if topic %} What you want to talk about: {{ topic }}.{% endif %}
Write only what this person says next: one message in their own voice, with no quotation marks, \
no name or label in front, and no description of what they do. Never answer as the assistant; \
ask, react, push back or follow up the way this person would."""
"""The simulated user's instructions (a Jinja template over the row's ``persona`` and ``topic``)."""

OPENING = "Write your first message to the assistant."
"""What the simulated user is asked before the conversation has begun."""

_LABEL = re.compile(r"^\s*(?:\*\*)?(?:user|person|me|human)(?:\*\*)?\s*:\s*", re.IGNORECASE)


def user_text(reply: str | None) -> str | None:
    """The simulated user's message without a speaker label or the quotes around it."""
    if reply is None:
        return None
    text = _LABEL.sub("", reply.strip())
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text or None


class Conversation(Task):
    """A dialogue of ``n_turns`` user messages, each answered, from a row's ``topic``,
    ``persona`` or opening ``instruction`` (at least one of them).

    The simulated user is ``user_llm`` when given, else the task's own LLM playing both parts.
    Output: ``messages``, the dialogue as chat messages (the assistant's ``system_prompt``
    first when there is one), the conversational format TRL's trainers read. With an
    ``instruction`` the first user message is that instruction, as it is.
    """

    registry_name: ClassVar[str | None] = "conversation"
    example: ClassVar[tuple[Row, Row] | None] = (
        {"topic": "planting tomatoes on a balcony", "persona": "a retired teacher with a small flat"},
        {
            "messages": [
                {"role": "user", "content": "I'd like to grow tomatoes on my balcony. Where do I start?"},
                {"role": "assistant", "content": "Start with a large pot, at least 20 litres, and a sunny spot..."},
                {"role": "user", "content": "It only gets sun in the morning. Is that enough?"},
                {"role": "assistant", "content": "Six hours is the usual minimum; with less, pick cherry tomatoes..."},
            ]
        },
    )

    n_turns: int = Field(default=2, ge=1, le=32, description="User messages in each conversation, each answered.")
    user_llm: LLM | None = Field(
        default=None,
        description="The LLM that plays the user (a spec such as 'openai:gpt-4o-mini' or a table); "
        "None: the task's own LLM plays both parts.",
    )
    system_prompt: str | None = Field(
        default=None, description="The assistant's system prompt; a row's system_prompt column wins."
    )
    user_prompt: str = Field(
        default=USER_ROLE_PROMPT,
        description="The simulated user's instructions: a Jinja template over the row's persona and topic.",
    )
    seed: int = Field(default=0, description="Seeds each row's sampling, so reruns write the same conversations.")

    _speakers: Speakers | None = PrivateAttr(default=None)

    @field_validator("user_llm", mode="before")
    @classmethod
    def _user_llm_from_spec(cls, value: Any) -> Any:
        if value is None or isinstance(value, LLM):
            return value
        from taskloom import llm_from_spec

        return llm_from_spec(value)

    @property
    def inputs(self) -> StepColumns:
        return {"topic": False, "persona": False, "instruction": False, "system_prompt": False}

    @property
    def outputs(self) -> StepColumns:
        return ["messages", "model_name"]

    def resolve_llm(self) -> LLM:
        """The task's LLM, or, with a ``user_llm``, both as one whose calls each name their speaker."""
        llm = super().resolve_llm()
        if self.user_llm is None:
            return llm
        if self._speakers is None or self._speakers.assistant is not llm or self._speakers.user is not self.user_llm:
            self._speakers = Speakers(assistant=llm, user=self.user_llm)
        return self._speakers

    def load(self) -> None:
        self.resolve_llm().load()

    def unload(self) -> None:
        super().unload()
        if self.user_llm is not None:
            self.user_llm.unload()

    def dump(self) -> dict[str, Any]:
        data = super().dump()
        data["user_llm"] = self.user_llm.dump() if self.user_llm is not None else None
        return data

    # -- prompts --------------------------------------------------------------------------------

    def _role_prompt(self, row: Row) -> str:
        return compile_template(self.user_prompt).render(persona=row.get("persona"), topic=row.get("topic")).strip()

    def _user_chat(self, row: Row, dialogue: Chat) -> Chat:
        """What the simulated user sees: its part, then the dialogue with the roles swapped (its own
        messages are its answers)."""
        chat: Chat = [
            {"role": "system", "content": self._role_prompt(row)},
            {"role": "user", "content": OPENING},
        ]
        for message in dialogue:
            chat.append({"role": "assistant" if message["role"] == "user" else "user", "content": message["content"]})
        return chat

    def _assistant_chat(self, row: Row, dialogue: Chat) -> Chat:
        system = self._system(row)
        head: Chat = [{"role": "system", "content": system}] if system else []
        return [*head, *dialogue]

    def _system(self, row: Row) -> str | None:
        given = row.get("system_prompt")
        return given if isinstance(given, str) and given.strip() else self.system_prompt

    def format_input(self, input: Row) -> ChatType:
        if not any(isinstance(input.get(c), str) and input[c].strip() for c in ("topic", "persona", "instruction")):
            raise RowInputError(
                f"task {self.name!r} (conversation) needs a topic, a persona or an instruction to start from; "
                "this row has none of them (or only empty ones)."
            )
        opening = input.get("instruction")
        if isinstance(opening, str) and opening.strip():
            return self._assistant_chat(input, [{"role": "user", "content": opening.strip()}])
        return self._user_chat(input, [])

    def _kwargs(self, row: Row, generation: int, turn: int, speaker: str) -> dict[str, Any]:
        llm = self.resolve_llm()
        kwargs = seeded(llm, self.seed, row, generation, turn, speaker)
        if isinstance(llm, Speakers):
            kwargs["speaker"] = speaker
        return kwargs

    def plan(self, input: Row, chat: ChatType) -> CallPlan:
        made = Dialogues(self.num_generations)
        opening = input.get("instruction")
        given = opening.strip() if isinstance(opening, str) and opening.strip() else None
        for turn in range(self.n_turns):
            if turn == 0 and given is not None:
                for messages in made.messages:
                    messages.append({"role": "user", "content": given})
            else:
                outputs: list[GenerateOutput] = yield [
                    Call(self._user_chat(input, made.messages[g]), 1, g, self._kwargs(input, g, turn, "user"))
                    for g in made.live
                ]
                if not made.took(outputs, "user", user_text):
                    break
            outputs = yield [
                Call(self._assistant_chat(input, made.messages[g]), 1, g, self._kwargs(input, g, turn, "assistant"))
                for g in made.live
            ]
            if not made.took(outputs, "assistant", stripped):
                break
        return made.output()

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        dialogue = read_dialogue(output)["messages"]
        expected = 2 * self.n_turns
        if len(dialogue) < expected:
            raise ValueError(f"the conversation stopped after {len(dialogue)} of {expected} messages")
        return {"messages": self._assistant_chat(input or {}, dialogue)}
