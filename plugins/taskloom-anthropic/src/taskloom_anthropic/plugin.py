"""Registers the ``anthropic`` LLM. Imports nothing but taskloom, so listing plugins stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING

import taskloom

if TYPE_CHECKING:
    from taskloom.registry import LLMRegister


@taskloom.hookimpl
def register_llms(register: LLMRegister) -> None:
    from taskloom_anthropic.llm import AnthropicLLM

    register("anthropic", AnthropicLLM)
