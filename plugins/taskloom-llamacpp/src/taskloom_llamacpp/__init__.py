"""taskloom-llamacpp: GGUF models in-process through llama-cpp-python; SmolLM2-135M-Instruct comes bundled."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskloom_llamacpp.llm import LlamaCppLLM
    from taskloom_llamacpp.models import bundled_model_path
    from taskloom_llamacpp.server_llm import LlamaServerLLM

__all__ = ["LlamaCppLLM", "LlamaServerLLM", "bundled_model_path"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the package (or its plugin module) stays cheap.
    if name == "LlamaCppLLM":
        from taskloom_llamacpp.llm import LlamaCppLLM

        return LlamaCppLLM
    if name == "LlamaServerLLM":
        from taskloom_llamacpp.server_llm import LlamaServerLLM

        return LlamaServerLLM
    if name == "bundled_model_path":
        from taskloom_llamacpp.models import bundled_model_path

        return bundled_model_path
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
