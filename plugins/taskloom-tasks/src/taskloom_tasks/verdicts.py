"""Reading a comparison's verdict: "A", "B" or "tie", however the judge phrased it."""

from __future__ import annotations

import re
from typing import Literal

Verdict = Literal["A", "B", "tie"]

# "A", "[[B]]", "Output (a)" (AlpacaEval), "**Response B**", "tie." as the whole reply.
_BARE = re.compile(
    r"^[\s\[(\"'*`]*(?:response|output|answer|assistant)?[\s(\[]*([AB]|tie|draw)[\s\])\"'*`.!]*$", re.IGNORECASE
)
# Arena-Hard's "[[A>>B]]", "[[A>B]]", "[[A=B]]", "[[B>A]]", "[[B>>A]]".
_ORDERING = re.compile(r"\[\[\s*([AB])\s*(>>|>|=)\s*([AB])\s*\]\]")
_DOUBLE_BRACKETS = re.compile(r"\[\[\s*([ABC])\s*\]\]")
# "Verdict: A", "Winner: Response B", "**Final verdict**: [[A]]", "Better response: (B)".
_LABELLED = re.compile(
    r"\b(?:final verdict|verdict|winner|better response|preferred response|preference|choice|result"
    r"|final answer|answer)"
    r"[\s*_]*[:=][\s*_\[(\"']*(?:response|output|answer|assistant)?\s*([AB]|tie|draw)\b",
    re.IGNORECASE,
)
_SENTENCE = re.compile(
    r"\b(?:response|output|answer|assistant)\s+([AB])\s+(?:is|was)\s+(?:clearly\s+|slightly\s+|much\s+)?(?:better|preferred|superior|stronger|more)",
    re.IGNORECASE,
)
_PREFER = re.compile(r"\bprefer(?:red|s)?\s+(?:response|output|answer)\s+([AB])\b", re.IGNORECASE)
_TIE = re.compile(
    r"\b(?:it'?s a tie|a tie|equally (?:good|bad|strong|helpful)|both (?:are|responses are) equal"
    r"|neither is better|no clear winner)",
    re.IGNORECASE,
)


def _normal(token: str) -> Verdict:
    token = token.upper()
    if token in {"A", "B"}:
        return "A" if token == "A" else "B"
    return "tie"  # TIE, DRAW, or MT-Bench's [[C]]


def find_verdict(text: str, allow_tie: bool = True) -> Verdict:
    """The verdict a judge gave; the last explicit one when it restates it. ``ValueError`` if none."""
    found: Verdict | None = None
    bare = _BARE.match(text.strip())
    if bare is not None:
        found = _normal(bare.group(1))
    elif orderings := list(_ORDERING.finditer(text)):
        first, sign, _ = orderings[-1].groups()
        found = "tie" if sign == "=" else _normal(first)
    else:
        for pattern in (_DOUBLE_BRACKETS, _LABELLED, _SENTENCE, _PREFER):
            matches = list(pattern.finditer(text))
            if matches:
                found = _normal(matches[-1].group(1))
                break
        if found is None and _TIE.search(text):
            found = "tie"
    if found is None:
        raise ValueError("the reply names no verdict (A, B or tie)")
    if found == "tie" and not allow_tie:
        raise ValueError("the reply is a tie, but this judge must pick A or B")
    return found


def swap(verdict: Verdict) -> Verdict:
    """The verdict in the other order: what was A is B."""
    return "B" if verdict == "A" else "A" if verdict == "B" else "tie"
