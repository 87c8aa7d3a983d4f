"""The hook that registers the ``openai`` LLM; imports neither the SDK nor the class module up front."""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskloom.plugin import hookimpl

if TYPE_CHECKING:
    from taskloom.plugin import LLMRegister


@hookimpl
def register_llms(register: LLMRegister) -> None:
    from taskloom_openai.llm import OpenAILLM

    register(OpenAILLM)
