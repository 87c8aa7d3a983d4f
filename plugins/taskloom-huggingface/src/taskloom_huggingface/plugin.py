"""The hook that registers ``huggingface``; it imports nothing but taskloom until it is called."""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskloom.plugin import hookimpl

if TYPE_CHECKING:
    from taskloom.plugin import LLMRegister


@hookimpl
def register_llms(register: LLMRegister) -> None:
    from taskloom_huggingface.llm import HuggingFaceLLM

    register(HuggingFaceLLM)
