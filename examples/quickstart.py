"""The `make demo` script: answer a few instructions with the local default model, then judge them.

Neither task names an LLM, so both get the default one: the SmolLM2-135M-Instruct model bundled
with taskloom-llamacpp, run in this process (no key, no network), unless $TASKLOOM_DEFAULT_LLM or
the config file names another (`taskloom config` says which). The judge asks for structured
output, so its replies always parse. The rows are written to out/quickstart.jsonl.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from taskloom import get_task, task
from taskloom.config import default_llm_choice

INSTRUCTIONS = [
    "What's the capital city of Spain? Answer in one sentence.",
    "Give one tip for staying focused while studying.",
    "Name three primary colours.",
    "Write one sentence about the sea.",
    "What is 7 plus 5?",
]
OUTPUT = Path("out/quickstart.jsonl")


class Verdict(BaseModel):
    rating: int = Field(ge=1, le=5, description="1 = useless, 5 = excellent")
    reason: str = Field(max_length=160, description="one sentence")


@task(
    "Rate how well the answer responds to the instruction, from 1 (useless) to 5 (excellent).\n\n"
    "Instruction: {{ instruction }}\nAnswer: {{ generation }}\n\n"
    "Reply in JSON with the rating and a one-sentence reason.",
    outputs=["rating", "reason"],
)
def rate_answer(output: str) -> dict[str, Any]:
    verdict = Verdict.model_validate_json(output)
    return {"rating": verdict.rating, "reason": verdict.reason}


def shorten(text: str | None, width: int) -> str:
    text = " ".join((text or "-").split())
    return text if len(text) <= width else text[: width - 3] + "..."


def print_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(line[i]) for line in [headers, *rows]) for i in range(len(headers))]
    for index, line in enumerate([headers, *rows]):
        print(" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        if index == 0:
            print("-+-".join("-" * width for width in widths))


def main() -> None:
    choice = default_llm_choice()
    print(f"Default LLM: {choice.spec!r}, from {choice.source}.")
    writer = get_task("text-generation")
    writer.llm.set_runtime_parameters({"generation_kwargs": {"max_new_tokens": 96, "temperature": 0.7, "seed": 7}})
    judge = rate_answer()
    judge.llm.set_runtime_parameters(
        {"generation_kwargs": {"structured_output": Verdict, "max_new_tokens": 768, "temperature": 0.2, "seed": 7}}
    )
    print(f"Model: {writer.llm.model_name}. Answering {len(INSTRUCTIONS)} instructions, then judging the answers...")

    start = time.perf_counter()
    writer.load()
    judge.load()
    try:
        answered = next(writer.process([{"instruction": text} for text in INSTRUCTIONS]))
        judged = next(judge.process(answered))
    finally:
        writer.unload()
        judge.unload()
    elapsed = time.perf_counter() - start

    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    with OUTPUT.open("w", encoding="utf-8") as sink:
        for row in judged:
            sink.write(json.dumps(row, ensure_ascii=False) + "\n")

    tokens = sum(
        row["distilabel_metadata"][f"statistics_{name}"]["output_tokens"]
        for row in judged
        for name in (writer.name, judge.name)
    )
    failed = sum(1 for row in judged if row["generation"] is None or row["rating"] is None)
    print()
    print_table(
        ("instruction", "generation", "rating"),
        [(shorten(r["instruction"], 36), shorten(r["generation"], 48), str(r["rating"] or "-")) for r in judged],
    )
    print(f"\n{len(judged)} rows in {elapsed:.1f} s ({tokens} tokens generated), written to {OUTPUT}.")
    if failed:
        print(f"{failed} rows kept their raw output because a reply could not be parsed; see distilabel_metadata.")


if __name__ == "__main__":
    main()
