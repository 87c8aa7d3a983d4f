"""Tool calls as a generation's text: the one shape every provider writes and every task reads.

Generations are strings (the cache stores text), so a reply that calls tools instead of writing
text travels as JSON: ``{"tool_calls": [{"id", "name", "arguments"}], "content"?}``. A provider
maps its API's shape (OpenAI's ``tool_calls``, Anthropic's ``tool_use`` blocks) into calls and
hands them here, so the encoding cannot differ from one provider to the next.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from typing import Any


def decoded_arguments(arguments: Any) -> Any:
    """A call's arguments as an object: a JSON string decoded ("" is no arguments), anything else as given.

    A string that is not JSON stays the string it was, so the call is marked invalid, visibly,
    rather than losing what the model wrote.
    """
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):
            return json.loads(arguments) if arguments.strip() else {}
    return arguments


def tool_calls_text(calls: Iterable[tuple[Any, Any, Any]], content: Any = None) -> str:
    """The generation text of a reply that made ``calls`` (each ``(id, name, arguments)``).

    ``arguments`` is kept as a decoded object; arguments the model wrote as a string that is not
    JSON stay the string they were, so the task marks the call invalid rather than losing it.
    Text the model wrote beside the calls goes under ``content``.
    """
    encoded = [
        {"id": call_id, "name": name, "arguments": decoded_arguments(arguments)} for call_id, name, arguments in calls
    ]
    reply: dict[str, Any] = {"tool_calls": encoded}
    if isinstance(content, str) and content.strip():
        reply["content"] = content
    return json.dumps(reply, ensure_ascii=False)
