"""Hugging Face Inference Providers, Inference Endpoints and TGI as a taskloom LLM."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["HuggingFaceLLM"]

if TYPE_CHECKING:
    from taskloom_huggingface.llm import HuggingFaceLLM


def __getattr__(name: str) -> Any:
    # Lazy, so `import taskloom_huggingface.plugin` stays light.
    if name == "HuggingFaceLLM":
        from taskloom_huggingface.llm import HuggingFaceLLM

        return HuggingFaceLLM
    raise AttributeError(name)
