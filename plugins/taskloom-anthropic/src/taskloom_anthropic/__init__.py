"""taskloom-anthropic: Claude models (and any server speaking the Messages API) for taskloom."""

from __future__ import annotations

from taskloom_anthropic.batches import BatchMismatchError
from taskloom_anthropic.llm import AnthropicLLM

__all__ = ["AnthropicLLM", "BatchMismatchError"]
