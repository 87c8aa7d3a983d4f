"""Rounds of rewriting, each building on the last: what ``evol-instruct`` and ``evol-quality`` share.

A chain starts from a row's text; each round applies one mutation (drawn deterministically, so
a rerun sends the same requests and finds them in the cache) to the previous round's result.
Generations are separate chains run side by side. Every reply is kept, labelled with its
mutation, as the row's raw output, so a chain that breaks half-way still keeps what was paid for.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from typing import Any

from taskloom.plugin import Call, CallPlan, ChatType, GenerateOutput, token_counts
from taskloom_tasks.base import replies_json

Reader = Callable[[str | None], str | None]
"""A round's reply to the text it carries on, or None when the reply holds none."""


def draw_mutation(mutations: Sequence[str], *key: object) -> str:
    """One mutation, chosen by a generator seeded with ``key`` only (seed, row text, generation, round).

    Nothing else (not the replies, not the time) goes into the choice, so the same settings
    always ask the same questions.
    """
    return random.Random("|".join(str(part) for part in key)).choice(list(mutations))


def rounds_plan(
    *,
    start: str,
    num_generations: int,
    num_rounds: int,
    mutation_for: Callable[[int, int], str],
    chat_for: Callable[[str, str], ChatType],
    read: Reader,
    first_chat: ChatType | None = None,
) -> CallPlan:
    """The calls of ``num_generations`` chains of ``num_rounds`` rounds each, starting from ``start``.

    ``mutation_for(generation, round)`` names a round's mutation and ``chat_for(text, mutation)``
    builds its request; ``first_chat``, when given, is generation 0's first request as the
    task already formatted it (what the row's raw input shows). A chain whose reply ``read``
    cannot use stops there. The result has one text per generation: the JSON list of its rounds,
    ``[{"operation": ..., "reply": ...}, ...]``, or None when no round brought back any text.
    """
    n = num_generations
    current = [start] * n
    rounds: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    input_tokens, output_tokens = [0] * n, [0] * n
    errors: list[str] = []
    live = list(range(n))
    for round_ in range(num_rounds):
        mutations = {g: mutation_for(g, round_) for g in live}
        calls = [
            Call(
                first_chat if first_chat is not None and round_ == 0 and g == 0 else chat_for(current[g], mutations[g]),
                1,
                first_index=g,
            )
            for g in live
        ]
        outputs: list[GenerateOutput] = yield calls
        still: list[int] = []
        for g, output in zip(live, outputs, strict=True):
            reply = output["generations"][0]
            rounds[g].append({"operation": mutations[g], "reply": reply})
            [tokens_in], [tokens_out] = token_counts(output.get("statistics"), 1)
            input_tokens[g] += tokens_in or 0
            output_tokens[g] += tokens_out or 0
            if output.get("error"):
                errors.append(str(output["error"]))
            evolved = read(reply)
            if evolved is not None:
                current[g] = evolved
                still.append(g)
        live = still
        if not live:
            break
    result: GenerateOutput = {
        "generations": [replies_json(r) if any(x["reply"] is not None for x in r) else None for r in rounds],
        "statistics": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }
    if errors:
        result["error"] = errors[0]
    return result


def read_rounds(output: str | None, num_rounds: int, read: Reader, what: str) -> tuple[list[str], list[str]]:
    """Every round's text and mutation from a chain's raw output; ``ValueError`` unless all rounds gave one."""
    rounds = json.loads(output or "null")
    if not isinstance(rounds, list):
        raise ValueError("expected the replies of every round")
    texts = [read(r.get("reply")) for r in rounds]
    if len(rounds) < num_rounds or any(t is None for t in texts):
        done = sum(t is not None for t in texts)
        raise ValueError(f"only {done} of {num_rounds} rounds produced {what}")
    return [t for t in texts if t is not None], [str(r.get("operation")) for r in rounds]
