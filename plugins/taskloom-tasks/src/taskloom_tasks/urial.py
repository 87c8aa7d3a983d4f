"""``urial``: answers from a base (not instruction-tuned) model, aligned in context by a fixed preamble.

A base model has never seen a chat template; what makes it answer like an assistant is a
document that reads like a record of an assistant's conversations. So the prompt is raw text:
a description of the assistant, a few example exchanges written for this package, then the
row's conversation and an open "### Assistant:" turn for the model to complete.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from taskloom.plugin import ChatType, Row, StepColumns, text_of
from taskloom_tasks.base import PromptedTask

TURN_MARKERS = ["\n### User:", "\n### Assistant:"]
"""Where the packaged preamble's layout starts a turn: an answer ends before the next one."""

_ROLES = {"user", "assistant", "system"}


class URIAL(PromptedTask):
    """Answer a row's ``instruction`` (or the last user turn of its ``conversation``) with a base model.

    The prompt is sent as raw text, with no chat template, so the task needs an LLM that
    completes raw text (the local llama.cpp model does; a chat-only API is refused when the task
    is built). The answer ends where the model starts the next turn: ``stop`` is sent with every
    request and the reply is cut at the first of them too, for an LLM that overshoots. A system
    message in the conversation, or ``system_prompt``, is added to the preamble's description of
    the assistant.
    """

    needs_raw_text: ClassVar[bool] = True
    example: ClassVar[tuple[Row, Row] | None] = (
        {"instruction": "Name a planet with rings."},
        {"generation": "Saturn is the best known, but Jupiter, Uranus and Neptune have fainter rings too."},
    )
    registry_name: ClassVar[str | None] = "urial"
    template_name: ClassVar[str] = "urial"

    stop: list[str] = Field(
        default_factory=lambda: list(TURN_MARKERS),
        description="Where an answer ends: the preamble's turn markers; set your own with your own template.",
    )

    @property
    def inputs(self) -> StepColumns:
        return {"instruction": False, "conversation": False}

    @property
    def outputs(self) -> StepColumns:
        return ["generation", "model_name"]

    def template_variables(self) -> list[str]:
        return ["json", "messages", "system"]

    def messages_of(self, input: Row) -> list[dict[str, str]]:
        """The row's turns as ``{"role", "content"}``, checked to end with the user's, which the model answers."""
        if input.get("instruction") is not None:
            return [{"role": "user", "content": str(input["instruction"])}]
        conversation = input.get("conversation")
        if conversation is None:
            raise ValueError(
                f"task {self.name!r}: a row needs an 'instruction' or a 'conversation'; it has {sorted(input)}"
            )
        if not isinstance(conversation, list) or not all(
            isinstance(m, dict) and m.get("role") in _ROLES and "content" in m for m in conversation
        ):
            raise ValueError(
                f"task {self.name!r}: column 'conversation' must be a list of messages with a 'role' (user, "
                "assistant or system) and a 'content'"
            )
        turns = [{"role": m["role"], "content": text_of(m["content"])} for m in conversation]
        if not turns or turns[-1]["role"] != "user":
            raise ValueError(f"task {self.name!r}: column 'conversation' must end with a user message to answer")
        return turns

    def template_context(self, input: Row) -> dict[str, Any]:
        turns = self.messages_of(input)
        system = [t["content"] for t in turns if t["role"] == "system"]
        if self.system_prompt:
            system.insert(0, self.system_prompt)
        return {
            "messages": [t for t in turns if t["role"] != "system"],
            "system": "\n".join(system) or None,
        }

    def format_input(self, input: Row) -> ChatType:
        # render() strips the text; the open turn's newline is put back so the answer starts on its own line.
        return self.render(input) + "\n"

    def llm_kwargs(self) -> dict[str, Any]:
        kwargs = super().llm_kwargs()
        kwargs["stop"] = list(dict.fromkeys([*(kwargs.get("stop") or []), *self.stop]))
        return kwargs

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        if output is None:
            raise ValueError("no text")
        text = "\n" + output  # a reply that opens with a turn marker holds no answer
        for marker in self.stop:
            text = text.split(marker, 1)[0]
        answer = text.strip()
        if not answer:
            raise ValueError("the model wrote no answer before the next turn")
        return {"generation": answer}
