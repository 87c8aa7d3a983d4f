"""Seeds that tell rows apart, so every row's requests are its own in the cache.

A task that sends the same prompt for many rows (Magpie's template text, a conversation's
opening) would otherwise make one cache key for all of them: they would share one answer on a
rerun while each got its own the first time. Every request such a task makes carries a seed
drawn from the row, the generation, the turn and the speaker, so the rows differ, the run is
reproducible, and the answers do not depend on how many rows are in flight.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from taskloom.plugin import LLM, METADATA, Row

SEED_MASK = 0x7FFFFFFF


def stable_seed(*parts: object) -> int:
    """A 31-bit seed from ``parts``: the same on every machine and run (unlike ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & SEED_MASK


def row_key(row: Row) -> str:
    """What tells a row apart: its ``seed`` column, else its columns (without the metadata) as JSON."""
    seed = row.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return f"seed={seed}"
    return json.dumps({k: v for k, v in row.items() if k != METADATA}, sort_keys=True, default=str)


def seeded(llm: LLM, task_seed: int, row: Row, *where: object) -> dict[str, Any]:
    """The ``seed`` option for one request of ``row`` (none for an LLM that takes no seed).

    The LLM's own ``seed`` option, when set, is mixed in, so changing it changes every answer.
    """
    if not llm.accepts("seed"):
        return {}
    base = llm.generation_kwargs.get("seed") or 0
    return {"seed": stable_seed(task_seed, base, row_key(row), *where)}
