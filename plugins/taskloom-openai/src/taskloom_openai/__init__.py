"""taskloom-openai: OpenAI and OpenAI-compatible chat completion servers as a taskloom LLM."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskloom_openai.llm import OpenAILLM

__all__ = ["OpenAILLM"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the package (or its plugin module) stays cheap.
    if name == "OpenAILLM":
        from taskloom_openai.llm import OpenAILLM

        return OpenAILLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
