"""Shapes of the data that flows between tasks and LLMs.

They are ``TypedDict`` s rather than models so a provider can build them with plain dict
literals on the hot path, and so rows stay JSON-ready without conversion.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypeAlias, TypedDict


class TextPart(TypedDict):
    """A piece of text in a message whose content is a list of parts (OpenAI's content-part format)."""

    type: str  # "text"
    text: str


class ImageURL(TypedDict):
    url: str
    """An ``http(s)://`` URL, a ``data:`` URI, or a ``file://`` URL that the provider reads when it sends."""


class ImagePart(TypedDict):
    """An image in a message, as OpenAI's content parts carry it; each provider turns it into its own shape."""

    type: str  # "image_url"
    image_url: ImageURL


ContentPart: TypeAlias = TextPart | ImagePart


class ChatMessage(TypedDict):
    role: str
    content: str | list[ContentPart]


Chat: TypeAlias = list[ChatMessage]
"""OpenAI-style messages, in order."""

ChatType: TypeAlias = Chat | str
"""One input to an LLM: chat messages, or a raw text prompt (a ``str``) that is completed as it is,
with no chat template around it. Only an LLM whose ``completes_raw_text()`` is True gets raw
text: a task that sends it checks that when it is built."""

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
