"""Per-row cost of ``filter`` and the TRL format steps of ``taskloom-curate`` (target: at most 10 µs).

Each step's ``process`` runs over 100,000 judged rows (UltraFeedback-shaped: an instruction, four
generations, four ratings, a verdict) in batches of 1,000, best of 3, with the garbage collector
paused so that the figure is the step's own work, not a collection of the rows the benchmark
holds. The target is per row handled: per input row, or per row written for a step that writes
more rows than it reads (KTO writes one per generation).

    .venv/bin/python bench/curate_steps.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from typing import Any

TARGET_US = 10.0
BATCH = 1_000


def judged_rows(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        generations = [f"answer {j} to question {i}: " + "word " * rng.randint(5, 40) for j in range(4)]
        rows.append(
            {
                "instruction": f"Question number {i}?",
                "generations": generations,
                "ratings": [rng.choice([1, 2, 3, 4, 5, None]) for _ in range(4)],
                "rating": rng.choice([1, 2, 3, 4, 5, None]),
                "orders_agree": rng.random() < 0.7,
                "generation": generations[0],
            }
        )
    return rows


def steps() -> dict[str, Any]:
    from taskloom import get_step

    return {
        "filter 'rating >= 4 and orders_agree'": get_step("filter", expression="rating >= 4 and orders_agree"),
        "format-sft (messages)": get_step("format-sft"),
        "format-dpo (best-worst, 4 ratings)": get_step("format-dpo"),
        "format-dpo (best-random-lower)": get_step("format-dpo", pairing="best-random-lower"),
        "format-kto (threshold 4)": get_step("format-kto", threshold=4),
    }


def time_step(step: Any, rows: list[dict[str, Any]], repeat: int = 3) -> tuple[float, int]:
    """Best seconds for ``step.process`` over ``rows`` in batches (fresh copies of the batch dicts), rows made."""
    best = float("inf")
    made = 0
    batches = [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]
    for _ in range(repeat):
        step.load()
        copies = [[dict(row) for row in batch] for batch in batches]  # steps may not keep what they get
        gc.disable()
        try:
            made = 0
            start = time.perf_counter()
            for batch in copies:
                for out in step.process(batch):
                    made += len(out)
            best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
            step.unload()
    return best, made


def measure(count: int = 100_000) -> dict[str, Any]:
    rows = judged_rows(count)
    figures = {}
    for name, step in steps().items():
        seconds, made = time_step(step, rows)
        figures[name] = {"per_input": seconds / count * 1e6, "per_row": seconds / max(count, made) * 1e6, "made": made}
    return {"rows": count, "us_per_row": figures, "target_us": TARGET_US}


def report(result: dict[str, Any]) -> None:
    print(f"curate steps, {result['rows']:,} judged rows in batches of {BATCH:,}, best of 3:")
    for name, figure in result["us_per_row"].items():
        verdict = "met" if figure["per_row"] <= result["target_us"] else "MISSED"
        print(
            f"  {name:40} {figure['per_row']:6.2f} us/row ({figure['per_input']:.2f} per input row, "
            f"{figure['made']:,} rows written) (target <= {result['target_us']:g} us): {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    report(measure(parser.parse_args().rows))


if __name__ == "__main__":
    main()
