"""``sentiment``: a text in, one of ``positive``, ``negative`` or ``neutral`` out."""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from taskloom import Task
from taskloom.plugin import ChatType, Row

LABELS = ("positive", "negative", "neutral")
"""The only values the ``sentiment`` column takes (besides None for an unparsable answer)."""

_INSTRUCTIONS = (
    "Decide whether the feeling the text below expresses is positive, negative or neutral. "
    "Reply with exactly one word: positive, negative or neutral.\n\n"
    "Text:\n{text}"
)
_LABEL_WORD = re.compile(r"\b(" + "|".join(LABELS) + r")\b")
_LABELLED = re.compile(r"\b(?:sentiment|label|answer)\b\W{0,3}\s*(\w+)")


class SentimentTask(Task):
    """Label the sentiment of the row's ``text`` as positive, negative or neutral.

    Parsing accepts a bare word ("Positive."), a labelled line ("Sentiment: negative"), a JSON
    object (``{"sentiment": "neutral"}``) or a sentence naming exactly one label. Anything else
    fails to parse and keeps its raw text in ``distilabel_metadata``.
    """

    registry_name: ClassVar[str | None] = "sentiment"

    @property
    def inputs(self) -> list[str]:
        return ["text"]

    @property
    def outputs(self) -> list[str]:
        return ["sentiment", "model_name"]

    def format_input(self, input: Row) -> ChatType:
        return [{"role": "user", "content": _INSTRUCTIONS.format(text=input["text"])}]

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        return {"sentiment": parse_sentiment(output)}


def parse_sentiment(text: str | None) -> str | None:
    """Find the one label an answer gives; ValueError when there is none or several."""
    if text is None:
        return None
    lowered = text.strip().lower()
    # 1. A JSON object with a "sentiment" (or "label") key.
    if lowered.startswith("{"):
        try:
            data = json.loads(lowered)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            value = data.get("sentiment", data.get("label"))
            if isinstance(value, str) and value.strip() in LABELS:
                return value.strip()
    # 2. An explicit "Sentiment: x" wins over labels mentioned elsewhere in the answer.
    labelled = _LABELLED.search(lowered)
    if labelled and labelled.group(1) in LABELS:
        return labelled.group(1)
    # 3. The answer opens with a label ("Negative. The reviewer ...").
    first = re.match(r"\W*(\w+)", lowered)
    if first and first.group(1) in LABELS:
        return first.group(1)
    # 4. A sentence that names exactly one label.
    found: set[str] = set(_LABEL_WORD.findall(lowered))
    if len(found) == 1:
        return found.pop()
    if not found:
        raise ValueError(f"no sentiment label ({', '.join(LABELS)}) in the answer")
    raise ValueError(f"the answer names several labels: {sorted(found)}")
