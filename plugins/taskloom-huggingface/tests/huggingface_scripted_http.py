"""Hugging Face (OpenAI-shaped) bodies for core's scripted loopback server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from taskloom.testing import http
from taskloom.testing.http import ScriptedServer

__all__ = ["Reply", "ScriptedServer", "completion"]


def completion(text: str = "Hi there.", prompt_tokens: int = 7, completion_tokens: int = 3) -> dict[str, Any]:
    """A well-formed chat completion body."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "scripted",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


@dataclass
class Reply(http.Reply):
    """A scripted answer whose body is, unless given, a well-formed completion."""

    body: bytes | str | dict[str, Any] | list[Any] = field(default_factory=completion)
