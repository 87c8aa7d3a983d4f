"""The hook that registers the ``llamacpp`` and ``llamacpp-server`` LLMs, importing no class module up front."""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskloom.plugin import hookimpl

if TYPE_CHECKING:
    from taskloom.plugin import LLMRegister


@hookimpl
def register_llms(register: LLMRegister) -> None:
    from taskloom_llamacpp.llm import LlamaCppLLM
    from taskloom_llamacpp.server_llm import LlamaServerLLM

    register(LlamaCppLLM)
    register(LlamaServerLLM)
