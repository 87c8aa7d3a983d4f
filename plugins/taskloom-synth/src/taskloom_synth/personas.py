"""The personas shipped with the pack: one-sentence people a prompt can speak as or write for.

They live in ``data/personas.txt`` (inside the wheel) rather than in code, so that they can be
read, edited and reviewed as plain text, and replaced by a user's own file of the same shape.
The list is read once per process: a run of many shards asks for it many times.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from taskloom_synth.value_files import Scalar


@lru_cache(maxsize=1)
def shipped_personas() -> tuple[str, ...]:
    """Every shipped persona, in file order (comments and blank lines left out)."""
    text = resources.files("taskloom_synth").joinpath("data", "personas.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def persona_values() -> list[Scalar]:
    """The shipped personas as a column's values."""
    return list(shipped_personas())


__all__ = ["persona_values", "shipped_personas"]
