"""Shapes of the data that flows between tasks and LLMs.

They are ``TypedDict`` s rather than models so a provider can build them with plain dict
literals on the hot path, and so rows stay JSON-ready without conversion.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypeAlias, TypedDict


class ChatMessage(TypedDict):
    role: str
    content: str


ChatType: TypeAlias = list[ChatMessage]
"""One chat input: OpenAI-style messages, in order."""

Row: TypeAlias = dict[str, Any]
"""One row of data: column name to value."""


class Statistics(TypedDict, total=False):
    """Token counts: one entry per generation of the same input, or one count for them all."""

    input_tokens: list[int] | int
    output_tokens: list[int] | int
    cached_input_tokens: int
    """Of the input tokens, how many the provider read from its prompt cache (billed lower)."""


class GenerateOutput(TypedDict):
    """What an LLM returns for one input.

    ``generations`` holds ``num_generations`` texts; ``None`` where no text came back (refused,
    filtered, or failed after retries). ``error`` says why when the whole input failed;
    ``errors`` (one entry per generation) when only some of its generations did, so the others
    are kept. ``statistics`` holds one count per generation, or one count for them all (an API
    answering ``n`` choices at once), which the task splits across the generations.
    """

    generations: list[str | None]
    statistics: Statistics
    error: NotRequired[str | None]
    errors: NotRequired[list[str | None]]
    answered_by: NotRequired[list[str | None]]
    """Which LLM wrote each generation, when one LLM stands for several (a fallback): ``openai:gpt-4o-mini``."""
