"""Registers the ``anthropic`` LLM. Imports nothing but taskloom, so listing plugins stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskloom.plugin import hookimpl

if TYPE_CHECKING:
    from taskloom.plugin import LLMRegister


@hookimpl
def register_llms(register: LLMRegister) -> None:
    from taskloom_anthropic.llm import AnthropicLLM

    register(AnthropicLLM)
