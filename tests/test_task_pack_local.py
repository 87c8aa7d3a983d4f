"""The task pack end to end on the local default model: two answers per instruction, then judged.

A real small model writes the answers and the judgements, through the pipeline, with structured
output held by llama.cpp's grammar. Every judged row must either parse into valid columns or be
explicitly failed: outputs None, the error or the raw reply kept. Nothing may vanish.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from taskloom import Pipeline, get_llm, get_task

pytest.importorskip("taskloom_llamacpp", reason="runs on the local default model")
pytest.importorskip("taskloom_tasks", reason="the task pack under test")

INSTRUCTIONS = [
    "What's the capital city of Spain? Answer in one sentence.",
    "Give one tip for sleeping better.",
    "What is 2 plus 2?",
]


def _llm(**generation_kwargs: Any) -> Any:
    return get_llm("llamacpp", generation_kwargs={"temperature": 0.2, "seed": 3, **generation_kwargs})


def _failed_explicitly(row: dict[str, Any], task: str) -> bool:
    meta = row["distilabel_metadata"]
    return bool(meta.get(f"raw_output_{task}") or meta.get(f"error_{task}"))


def test_two_answers_judged_by_ultrafeedback_and_pairwise_judge(tmp_path: Path) -> None:
    answer = get_task(
        "text-generation",
        name="answer",
        llm=_llm(max_new_tokens=48, temperature=0.9),
        num_generations=2,
        group_generations=True,
        output_mappings={"generation": "generations"},
    )
    ultrafeedback = get_task("ultrafeedback", name="rate", llm=_llm(max_new_tokens=320), aspect="helpfulness")
    pairwise = get_task("pairwise-judge", name="compare", llm=_llm(max_new_tokens=256), both_orders=True)
    pipeline = Pipeline(answer >> [ultrafeedback, pairwise], source=[{"instruction": i} for i in INSTRUCTIONS])
    result = pipeline.run(output=tmp_path / "run", progress=None)

    rated = list(result.rows("rate"))
    compared = list(result.rows("compare"))
    assert [r["instruction"] for r in rated] == INSTRUCTIONS
    assert [r["instruction"] for r in compared] == INSTRUCTIONS

    parsed_ratings = 0
    for row in rated:
        assert len(row["generations"]) == 2
        if row["ratings"] is None:
            assert row["rationales"] is None and _failed_explicitly(row, "rate"), row
            continue
        parsed_ratings += 1
        assert len(row["ratings"]) == 2 and all(r in range(1, 6) for r in row["ratings"]), row
        assert len(row["rationales"]) == 2
        assert row["distilabel_metadata"]["raw_output_rate"]

    parsed_verdicts = 0
    for row in compared:
        if row["verdict"] is None:
            assert row["orders_agree"] is None and _failed_explicitly(row, "compare"), row
            continue
        parsed_verdicts += 1
        assert row["verdict"] in {"A", "B", "tie"}
        assert isinstance(row["orders_agree"], bool)
        if not row["orders_agree"]:
            assert row["verdict"] == "tie"  # the orders disagreed: position bias cancelled, not hidden
        raw = row["distilabel_metadata"]["raw_output_compare"]
        assert '"a_b"' in raw and '"b_a"' in raw  # both paid-for replies kept

    # The grammar holds the answers to the schema: failures are possible (a reply cut off by
    # max_new_tokens), but a judge that never parses is broken.
    assert parsed_ratings >= 1 and parsed_verdicts >= 1
    stats = result.stats.steps
    assert stats["compare"].requests == 2 * len(INSTRUCTIONS)  # both orders asked for every row


@pytest.mark.parametrize(
    ("name", "row", "fields"),
    [
        (
            "evol-quality",
            {"instruction": "Give one tip for sleeping better.", "response": "Sleep more."},
            {"num_evolutions": 1},
        ),
        ("genstruct", {"title": "Tides", "content": "The Moon's gravity pulls the oceans into two bulges."}, {}),
        ("clair", {"task": "What is 2 plus 2?", "student_solution": "2 plus 2 is 5."}, {}),
        ("urial", {"instruction": "What's the capital city of Spain?"}, {}),
    ],
)
def test_generation_tasks_on_the_local_model(name: str, row: dict[str, Any], fields: dict[str, Any]) -> None:
    """One short real run each: the row either parses into its columns or fails explicitly, raw text kept.

    With 32 new tokens a JSON answer is often cut off, which is exactly the failure that must be
    explicit; urial, which completes raw text with no grammar, must stop at its turn markers.
    """
    task = get_task(name, llm=_llm(max_new_tokens=32), **fields)
    task.load()
    try:
        [out] = next(task.process([dict(row)]))
    finally:
        task.unload()
    assert {k: out[k] for k in row} == row
    values = [out[c] for c in task.output_columns()]
    if any(v is None for v in values):
        assert _failed_explicitly(out, task.name), out
    else:
        assert all(isinstance(v, str | list) and v for v in values), out
    if name == "urial":
        assert isinstance(out["distilabel_metadata"]["raw_input_urial"], str)  # sent as raw text, no chat template
        assert out["generation"] is not None, out  # prose from a raw completion always reads
        assert "### User:" not in out["generation"]
