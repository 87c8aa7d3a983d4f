"""The hook that registers the ``llamacpp`` LLM; imports neither llama-cpp-python nor the class module up front."""

from __future__ import annotations

from typing import TYPE_CHECKING

import taskloom

if TYPE_CHECKING:
    from taskloom.registry import LLMRegister


@taskloom.hookimpl
def register_llms(register: LLMRegister) -> None:
    from taskloom_llamacpp.llm import LlamaCppLLM

    register("llamacpp", LlamaCppLLM)
