"""Reading what real models write: JSON in fences or prose, "Rating: 4/5", "four", "[[B]]".

Every reader either returns a value that is valid for the task (a score inside its range, a
label from its set) or raises ``ValueError`` saying what it looked for. The task base turns
that error into a row whose outputs are ``None`` and whose raw text is kept.
"""

from __future__ import annotations

import json
import re
from typing import Any

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
}  # fmt: skip
_NUMBER = r"(\d+(?:\.\d+)?|" + "|".join(NUMBER_WORDS) + r")"
_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
# "Rating: 4", "score = 4/5", "**Score:** 4 out of 5", "[RESULT] 4", "Rating (1-5): 4".
_LABELLED = re.compile(
    r"(?:\[RESULT\]|\b(?:rating|score|result|grade|final score|overall)\b(?:\s*\([^)]*\))?)"
    r"[\s*_:=\-#\[\]]*" + _NUMBER + r"\s*(?:/\s*\d+|out of \d+)?",
    re.IGNORECASE,
)
_SCORE_TEXT = re.compile(r"[\s*_\[(]*" + _NUMBER + r"\s*(?:/\s*\d+|out of \d+)?[\s*_\])]*\.?", re.IGNORECASE)
_BARE_FRACTION = re.compile(_NUMBER + r"\s*(?:/|out of)\s*(\d+)\b", re.IGNORECASE)


def _number(token: str) -> float:
    token = token.lower()
    return float(NUMBER_WORDS[token]) if token in NUMBER_WORDS else float(token)


def find_json(text: str) -> Any:
    """The first JSON object (or array) in ``text``: the whole reply, a fenced block, or embedded in prose.

    Raises ``ValueError`` when there is none.
    """
    stripped = text.strip()
    candidates = [m.group(1) for m in _FENCE.finditer(stripped)] + [stripped]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        candidate = candidate.strip()
        try:
            return json.loads(candidate)
        except ValueError:
            pass
        for match in re.finditer(r"[{\[]", candidate):
            try:
                value, _ = decoder.raw_decode(candidate, match.start())
            except ValueError:
                continue
            if isinstance(value, dict) or (isinstance(value, list) and value):
                return value
    raise ValueError("the reply holds no JSON object")


def is_json_reply(text: str) -> bool:
    """Whether the whole reply is one JSON object or array, bare or alone in a fenced block."""
    stripped = text.strip()
    fenced = _FENCE.fullmatch(stripped)
    try:
        value = json.loads(fenced.group(1) if fenced else stripped)
    except ValueError:
        return False
    return isinstance(value, dict | list)


def check_score(value: Any, low: int, high: int) -> int:
    """A score as an int inside ``[low, high]``: accepts 4, 4.0, "4", "4/5" and "four"."""
    if isinstance(value, bool):
        raise ValueError(f"score {value!r} is not a number")
    if isinstance(value, str):
        # The whole string must be the score ("4", "**4**", "4/5", "4 out of 5", "four."): a
        # number taken from inside other text ("<an integer from 1 to 5>") is not an answer.
        match = _SCORE_TEXT.fullmatch(value.strip())
        if match is None:
            raise ValueError(f"score {value!r} is not a number")
        value = _number(match.group(1))
    if not isinstance(value, int | float) or value != int(value):
        raise ValueError(f"score {value!r} is not a whole number")
    score = int(value)
    if not low <= score <= high:
        raise ValueError(f"score {score} is outside {low}-{high}")
    return score


def find_scores(text: str, low: int, high: int) -> list[int]:
    """Every labelled score in the text ("Rating: 4", "Score 3/5", "[RESULT] 2"), in order.

    A score outside the range is an error, not skipped: the model answered on another scale.
    When nothing is labelled, bare fractions over ``high`` ("4/5") are taken.
    """
    found = [check_score(m.group(1), low, high) for m in _LABELLED.finditer(text)]
    if found:
        return found
    return [check_score(m.group(1), low, high) for m in _BARE_FRACTION.finditer(text) if int(m.group(2)) == high]


def find_score(text: str, low: int, high: int) -> int:
    """The one score a reply gives; the last one when it restates it (a conclusion wins)."""
    scores = find_scores(text, low, high)
    if not scores:
        stripped = text.strip().strip("*.# ")
        if re.fullmatch(_NUMBER, stripped, re.IGNORECASE):
            return check_score(stripped, low, high)
        raise ValueError(f"the reply gives no score from {low} to {high}")
    return scores[-1]


def field_text(text: str, *names: str) -> str | None:
    """The text after a label such as "Rationale:" up to the next labelled line, if present."""
    pattern = (
        r"(?:^|\n)\s*[*#_\s]*(?:"
        + "|".join(names)
        # Not [*_\s]* after the colon: an empty field must not take the next label's line as its value.
        + r")[*_\s]*:[*_ \t]*(.*?)(?=\n\s*[*#_\s]*[A-Za-z ]{2,30}[*_\s]*:|\Z)"
    )
    match = re.search(pattern, text, re.IGNORECASE | re.DOTALL)
    if match is None:
        return None
    found = match.group(1).strip()
    return found or None


def split_sections(text: str, count: int, names: str = r"response|text|answer|output|generation") -> list[str] | None:
    """Split a reply into ``count`` parts headed "Response 1", "Text 2:", "#### Output for Text 3"...

    Returns None when the reply is not laid out that way.
    """
    heading = re.compile(
        r"(?:^|\n)[\s#*_\[(]*(?:(?:output|assessment|evaluation|feedback) for\s+)?(?:" + names + r")\s*#?\s*(\d+)\b",
        re.IGNORECASE,
    )
    marks = [(m.start(), int(m.group(1))) for m in heading.finditer(text)]
    # Keep the first heading of each number, in order 1..count.
    starts: list[int] = []
    for expected in range(1, count + 1):
        position = next(
            (start for start, number in marks if number == expected and (not starts or start > starts[-1])), None
        )
        if position is None:
            return None
        starts.append(position)
    ends = [*starts[1:], len(text)]
    return [text[start:end] for start, end in zip(starts, ends, strict=True)]


def clean_item(text: str) -> str:
    """One instruction or label as written: without list markers, quotes, or bold."""
    item = re.sub(r"^\s*(?:[-*•]|\d+[.):]|\(\d+\)|#+)\s*", "", text.strip())
    item = item.strip().strip("*_").strip()
    if len(item) >= 2 and item[0] == item[-1] and item[0] in "\"'`":
        item = item[1:-1].strip()
    return item


def list_items(text: str) -> list[str]:
    """The items of a numbered or bulleted list, or of plain lines when there are no markers."""
    # "1. First. 2. Second." written on one line is two items, not one.
    text = re.sub(r"(?<=[.;!?:])\s+(?=\d+[.)]\s)", "\n", text)
    lines = [line for line in text.splitlines() if line.strip()]
    marked = [line for line in lines if re.match(r"^\s*(?:[-*•]|\d+[.):]|\(\d+\))\s+", line)]
    chosen = marked or lines
    items = [clean_item(line).rstrip(";,").strip() for line in chosen]
    return [item for item in dict.fromkeys(items) if item]


def match_label(value: str, labels: list[str]) -> str | None:
    """The label ``value`` names, ignoring case, quotes and surrounding punctuation."""
    # Punctuation after closing quotes first ('"negative".'), then markers, quotes, bold, punctuation.
    wanted = clean_item(value.strip().rstrip(" .!,;")).strip(" .!,;").lower()
    for label in labels:
        if label.lower() == wanted:
            return label
    return None


def mentioned_labels(text: str, labels: list[str]) -> list[str]:
    """Labels written as whole words in ``text``, in the order they first appear."""
    positions = []
    for label in labels:
        match = re.search(r"(?<![\w-])" + re.escape(label) + r"(?![\w-])", text, re.IGNORECASE)
        if match is not None:
            positions.append((match.start(), label))
    return [label for _, label in sorted(positions)]
