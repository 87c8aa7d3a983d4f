"""Per-row overhead of a Task: ``text-generation`` driven by the scripted LLM.

100,000 rows go through ``task.process`` in batches of 1,000, best of 3 runs. The scripted LLM
answers instantly, so what is measured is taskloom's own work per row: column checks, chat
formatting, output parsing, metadata and row building. A plain-Python loop that does the least
equivalent work (one chat message and one output dict per row) is timed in the same run, and the
ratio is printed next to it.

    .venv/bin/python bench/task_overhead.py [--rows 100000] [--batch 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from taskloom import LLM, get_task
from taskloom.testing import ScriptedLLM
from taskloom.typing import ChatType, GenerateOutput

TARGET_US_PER_ROW = 15.0
"""``text-generation`` with one generation per row: at most this many microseconds per row."""

Batches = list[list[dict[str, Any]]]
REPLY = "Twice the number."


class ConstantLLM(LLM):
    """Answers every input with the same text and does nothing else: isolates the task's work."""

    @property
    def model_name(self) -> str:
        return "constant"

    def complete(self, inputs: Sequence[ChatType], num_generations: int, options: Any) -> list[GenerateOutput]:
        texts: list[str | None] = [REPLY] * num_generations
        zeros = [0] * num_generations
        return [{"generations": texts, "statistics": {"input_tokens": zeros, "output_tokens": zeros}} for _ in inputs]


def make_batches(rows: int, batch: int) -> Batches:
    data = [{"instruction": f"Question number {i}: what is {i} + {i}?"} for i in range(rows)]
    return [data[start : start + batch] for start in range(0, rows, batch)]


def _best_seconds(run: Callable[[], None], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def scripted() -> LLM:
    return ScriptedLLM(replies=[REPLY])


def time_task(batches: Batches, repeat: int, make_llm: Callable[[], LLM] = scripted, **options: Any) -> float:
    """Best wall time of pushing every batch through a fresh text-generation task."""

    def run() -> None:
        # A fresh LLM per run: the scripted LLM records every call it gets.
        task = get_task("text-generation", llm=make_llm(), **options)
        task.load()
        for batch in batches:
            next(task.process(batch))
        task.unload()

    return _best_seconds(run, repeat)


def time_baseline(batches: Batches, repeat: int) -> float:
    """Best wall time of the minimal hand-written equivalent: a chat and an output dict per row."""

    def run() -> None:
        for batch in batches:
            chats = [[{"role": "user", "content": row["instruction"]}] for row in batch]
            answers = [REPLY] * len(chats)
            [
                {**row, "generation": answer, "model_name": "scripted"}
                for row, answer in zip(batch, answers, strict=True)
            ]

    return _best_seconds(run, repeat)


def measure(rows: int = 100_000, batch: int = 1_000, repeat: int = 3) -> dict[str, Any]:
    batches = make_batches(rows, batch)
    per_row = 1e6 / rows
    single = time_task(batches, repeat) * per_row
    grouped = time_task(batches, repeat, num_generations=3, group_generations=True) * per_row
    task_only = time_task(batches, repeat, make_llm=ConstantLLM) * per_row
    baseline = time_baseline(batches, repeat) * per_row
    return {
        "rows": rows,
        "batch": batch,
        "repeat": repeat,
        "us_per_row": single,
        "us_per_row_3_grouped": grouped,
        "task_only_us_per_row": task_only,
        "baseline_us_per_row": baseline,
        "ratio": single / baseline,
        "task_only_ratio": task_only / baseline,
        "target_us_per_row": TARGET_US_PER_ROW,
        "met": single <= TARGET_US_PER_ROW,
    }


def report(result: dict[str, Any]) -> None:
    print(f"task overhead, {result['rows']:,} rows in batches of {result['batch']:,}, best of {result['repeat']}:")
    status = "met" if result["met"] else "MISSED"
    print(
        f"  text-generation, 1 generation/row         {result['us_per_row']:7.2f} us/row "
        f"(target <= {result['target_us_per_row']:.0f}): {status}"
    )
    print(
        f"  text-generation, 3 generations grouped    {result['us_per_row_3_grouped']:7.2f} us/input row "
        "(for information)"
    )
    print(
        f"  text-generation, constant no-op LLM       {result['task_only_us_per_row']:7.2f} us/row "
        "(the task's own work; the rest of the first line is the scripted LLM)"
    )
    print(
        f"  plain-Python baseline (chat + output dict) {result['baseline_us_per_row']:7.2f} us/row; "
        f"taskloom is {result['ratio']:.1f}x it with the scripted LLM, "
        f"{result['task_only_ratio']:.1f}x with the no-op LLM"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    report(measure(args.rows, args.batch, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
