"""Reading what an LLM returned: token counts per generation, whichever way they were reported."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` integers that differ by at most one and add up to ``total``."""
    if parts <= 0:
        return []
    share, rest = divmod(max(total, 0), parts)
    return [share + (1 if i < rest else 0) for i in range(parts)]


def _per_generation(value: Any, n: int) -> list[int | None]:
    if type(value) is list:
        if len(value) == n:
            return value
        if len(value) == 1 and n > 1 and isinstance(value[0], int):
            # One count for all n generations (an API answering n choices at once): split it, so
            # that every generation has counts and their sum is what was reported (not n times it).
            return list(split_evenly(value[0], n))
        return (value + [None] * n)[:n]
    if isinstance(value, int) and not isinstance(value, bool):
        return list(split_evenly(value, n))
    return [None] * n


def token_counts(statistics: Mapping[str, Any] | None, n: int) -> tuple[list[int | None], list[int | None]]:
    """Input and output tokens of each of ``n`` generations (None where nothing was reported)."""
    statistics = statistics or {}
    tokens_in, tokens_out = statistics.get("input_tokens"), statistics.get("output_tokens")
    if type(tokens_in) is list and type(tokens_out) is list and len(tokens_in) == len(tokens_out) == n:
        return tokens_in, tokens_out  # one count per generation, the usual shape: taken as it is (hot path)
    return _per_generation(tokens_in, n), _per_generation(tokens_out, n)
