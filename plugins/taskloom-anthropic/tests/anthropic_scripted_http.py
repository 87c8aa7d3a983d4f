"""Messages API bodies for core's scripted loopback server (``taskloom.testing.http``)."""

from __future__ import annotations

from typing import Any

from taskloom.testing.http import Reply, ScriptedServer

__all__ = ["Reply", "ScriptedServer", "error", "message", "tool_use"]


def message(text: str = "Hello there.", input_tokens: int = 11, output_tokens: int = 3, **usage: int) -> Reply:
    """A 200 Messages API answer with one text block."""
    return Reply(
        body={
            "id": "msg_scripted",
            "type": "message",
            "role": "assistant",
            "model": "scripted-model",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens, **usage},
        }
    )


def tool_use(name: str, arguments: Any, input_tokens: int = 40, output_tokens: int = 12) -> Reply:
    """A 200 Messages API answer whose content is a (forced) tool call."""
    return Reply(
        body={
            "id": "msg_scripted_tool",
            "type": "message",
            "role": "assistant",
            "model": "scripted-model",
            "content": [{"type": "tool_use", "id": "toolu_scripted", "name": name, "input": arguments}],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
    )


def error(status: int, kind: str, text: str = "scripted failure", **headers: str) -> Reply:
    """An error answer in the Messages API's error shape."""
    return Reply(
        status=status,
        body={"type": "error", "error": {"type": kind, "message": text}},
        headers={k.replace("_", "-"): v for k, v in headers.items()},
    )
