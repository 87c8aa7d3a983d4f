"""``genstruct``: an instruction grounded in a document, and its answer, for instruction data from raw text."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from taskloom.plugin import Row, StepColumns
from taskloom_tasks.base import PromptedTask

# The layout the prompt asks for ("User:" / "Assistant:"), the heading style of chat exports
# ("## User"), Genstruct-7B's own markers ("[[[User]]]") and question/answer labels.
_USER = r"user|instruction|question|prompt"
_ASSISTANT = r"assistant|answer|response"
_MARKER = r"(?:^|\n)[ \t]*(?:\[\[\[\s*(?:{names})\s*\]\]\]|[#*_ \t]*(?:{names})[*_ \t]*(?::|\n))[*_ \t]*"
_USER_MARK = re.compile(_MARKER.format(names=_USER), re.IGNORECASE)
_ASSISTANT_MARK = re.compile(_MARKER.format(names=_ASSISTANT), re.IGNORECASE)


def split_exchange(text: str) -> tuple[str, str]:
    """The instruction and the answer in a reply laid out as "User: ..." then "Assistant: ...".

    The answer runs to the end of the reply, or to a second "User:" (a model that goes on to
    write another exchange). Raises ``ValueError`` when either part is missing or empty.
    """
    user = _USER_MARK.search(text)
    if user is None:
        raise ValueError("the reply has no 'User:' part")
    assistant = _ASSISTANT_MARK.search(text, user.end())
    if assistant is None:
        raise ValueError("the reply has no 'Assistant:' part after the user's")
    instruction = text[user.end() : assistant.start()].strip()
    rest = text[assistant.end() :]
    again = _USER_MARK.search(rest)
    answer = (rest[: again.start()] if again else rest).strip()
    if not instruction or not answer:
        raise ValueError("the reply's 'User:' or 'Assistant:' part is empty")
    return instruction, answer


class Genstruct(PromptedTask):
    """Write, from a document's ``title`` and ``content``, one instruction about it and its answer.

    Turns any corpus of raw text into instruction data: the instruction (``user``) stands on its
    own, without pointing at "the document", and the answer (``assistant``) is grounded in the
    document's facts. Both come from one generation, laid out as ``User:`` then ``Assistant:``
    (or as JSON with structured output); Genstruct-7B's ``[[[User]]]`` markers are read too.
    """

    example: ClassVar[tuple[Row, Row] | None] = (
        {
            "title": "Sourdough starter",
            "content": "A sourdough starter is a mix of flour and water in which wild yeast and lactic acid "
            "bacteria grow. It is fed fresh flour and water every day; the bacteria make it sour and the yeast "
            "makes the bread rise.",
        },
        {
            "user": "Why does sourdough bread taste sour, and what makes it rise without baker's yeast?",
            "assistant": "Its starter holds lactic acid bacteria, whose acid gives the sour taste, and wild "
            "yeast, whose gas makes the dough rise.",
        },
    )
    registry_name: ClassVar[str | None] = "genstruct"
    template_name: ClassVar[str] = "genstruct"

    @property
    def inputs(self) -> StepColumns:
        return ["title", "content"]

    @property
    def outputs(self) -> StepColumns:
        return ["user", "assistant", "model_name"]

    def template_variables(self) -> list[str]:
        return ["json", "title", "content"]

    def template_context(self, input: Row) -> dict[str, Any]:
        return {"title": input["title"], "content": input["content"]}

    def response_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "user": {"type": "string", "minLength": 8, "maxLength": 600},
                "assistant": {"type": "string", "minLength": 1},
            },
            "required": ["user", "assistant"],
        }

    def from_json(self, data: Any, input: Row) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise ValueError("no JSON object with 'user' and 'assistant'")
        user = data.get("user", data.get("instruction"))
        assistant = data.get("assistant", data.get("answer"))
        if not isinstance(user, str) or not isinstance(assistant, str) or not user.strip() or not assistant.strip():
            raise ValueError("no 'user' and 'assistant' texts in the JSON")
        return {"user": user.strip(), "assistant": assistant.strip()}

    def from_text(self, text: str, input: Row) -> dict[str, Any]:
        user, assistant = split_exchange(text)
        return {"user": user, "assistant": assistant}
