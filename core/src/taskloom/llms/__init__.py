"""LLM base classes: :class:`LLM` for sync providers, :class:`AsyncLLM` for async ones."""

from taskloom.llms.async_llm import AsyncLLM, failed_output
from taskloom.llms.base import LLM

__all__ = ["LLM", "AsyncLLM", "failed_output"]
