"""Conversations being written turn by turn, one per generation of a row: what ``magpie`` and
``conversation`` share.

Each generation is its own chain of calls. A chain whose call brings back no text stops there
and records why; what it wrote so far is kept in the row's raw output, since it was paid for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from taskloom.plugin import Chat, GenerateOutput, token_counts


class Dialogues:
    """The messages, tokens and errors of ``count`` conversations written side by side."""

    def __init__(self, count: int) -> None:
        self.messages: list[Chat] = [[] for _ in range(count)]
        self.tokens_in = [0] * count
        self.tokens_out = [0] * count
        self.errors: list[str | None] = [None] * count
        self.live = list(range(count))
        """The conversations still going."""

    def took(self, outputs: list[GenerateOutput], role: str, clean: Callable[[str | None], str | None]) -> bool:
        """Add each live conversation's new ``role`` message (``clean`` reads it from the reply);
        those that got none stop. Whether any is still going."""
        still = []
        for g, output in zip(self.live, outputs, strict=True):
            [used_in], [used_out] = token_counts(output.get("statistics"), 1)
            self.tokens_in[g] += used_in or 0
            self.tokens_out[g] += used_out or 0
            text = clean(output["generations"][0])
            if text is None:
                self.errors[g] = output.get("error") or f"the {role} message came back empty"
                continue
            self.messages[g].append({"role": role, "content": text})
            still.append(g)
        self.live = still
        return bool(still)

    def output(self, extra: dict[str, Any] | None = None) -> GenerateOutput:
        """One text per conversation for ``format_output``: its messages as JSON (with ``extra``
        beside them), or None for one that never got a message."""
        texts: list[str | None] = [
            json.dumps({**(extra or {}), "messages": m}, ensure_ascii=False) if m else None for m in self.messages
        ]
        result: GenerateOutput = {
            "generations": texts,
            "statistics": {"input_tokens": self.tokens_in, "output_tokens": self.tokens_out},
        }
        if any(self.errors):
            result["errors"] = self.errors
        return result


def stripped(reply: str | None) -> str | None:
    """A reply without surrounding white space; None for an empty one."""
    return (reply or "").strip() or None


def read_dialogue(output: str | None) -> dict[str, Any]:
    """What :meth:`Dialogues.output` wrote for one conversation; ``ValueError`` if it holds none."""
    made = json.loads(output or "null")
    if not isinstance(made, dict) or not made.get("messages"):
        raise ValueError("no conversation was written")
    return made
