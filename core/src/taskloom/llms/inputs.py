"""What an LLM input holds, read the same way by every provider: chat messages or raw text, and
messages whose content is text or a list of parts (text and images).

Providers, the rate limiter and the budget all need to look inside an input; doing it here once
keeps them agreeing on what a raw prompt or an image part is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from taskloom.errors import BadRequestError
from taskloom.images import has_images
from taskloom.typing import Chat, ChatType, ContentPart, TextPart

if TYPE_CHECKING:
    from taskloom.llms.base import LLM

IMAGE_TOKENS = 1_000
"""Prompt tokens an image is reckoned at before an answer reports the real count (OpenAI charges 765
for a 1024x1024 picture in high detail, Anthropic about 1,400): a reservation, corrected later."""


def chat_messages(input: ChatType, llm: LLM) -> Chat:
    """``input`` as chat messages; raw text, which this LLM cannot complete, is refused on its row,
    and so are images, which it cannot read.

    A task that sends raw text is refused when it is built with such an LLM, so this guards only
    calls made by hand.
    """
    if not isinstance(input, str) and not llm.reads_images() and has_images(input):
        raise images_refused(llm)
    if isinstance(input, str):
        raise BadRequestError(
            f"{type(llm).__name__} ({llm.model_name}) does not complete raw text (it only takes chat messages); "
            "use an LLM whose completes_raw_text() is True, such as llamacpp or openai with a server that "
            "offers /v1/completions."
        )
    return input


def images_refused(llm: LLM) -> BadRequestError:
    """The error of a row whose chat holds images, for an LLM that reads none (not retried)."""
    return BadRequestError(
        f"{type(llm).__name__} ({llm.model_name}) reads no images, and this row's chat holds some; the row "
        "was not sent rather than sent without them. Use an LLM whose reads_images() is True (openai, "
        "anthropic, huggingface) with a vision model, or leave the image column out."
    )


def text_of(content: str | list[ContentPart]) -> str:
    """The text of a message's content: itself, or its text parts joined by newlines."""
    if isinstance(content, str):
        return content
    return "\n".join(cast(TextPart, part)["text"] for part in content if part.get("type") == "text")


def images_in(content: str | list[ContentPart]) -> int:
    """How many image parts a message's content holds."""
    return 0 if isinstance(content, str) else sum(1 for part in content if part.get("type") == "image_url")
