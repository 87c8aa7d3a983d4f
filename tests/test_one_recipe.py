"""One row recipe: ``process()``, ``Pipeline.run()`` and ``Pipeline.dry_run()`` give the same rows.

Each driver calls the step's own :meth:`~taskloom.steps.Step.work` and only decides when its
calls run, so for every registered task (core's and the task pack's) and for a pipeline full of
column mappings, the three must agree row for row. The LLM is scripted and answers from the
chat alone, so a task that makes several calls per row (both orders of a pairwise judge) gets
the same answers whatever order the driver sends them in.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

import taskloom
from taskloom import Pipeline, get_step, get_task
from taskloom.testing import ScriptedAsyncLLM, ScriptedLLM
from taskloom.typing import ChatType

# Input rows and required fields per task; a reply each parser of the pack can read at least in part.
TASKS: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
    "text-generation": ({}, [{"instruction": "Say a."}, {"instruction": "Say b.", "system_prompt": "Be brief."}]),
    "chat-generation": (
        {},
        [{"messages": [{"role": "user", "content": "Hi."}]}, {"messages": [{"role": "user", "content": "Yo."}]}],
    ),
    "structured-generation": (
        {"output_schema": {"type": "object", "properties": {"score": {"type": "integer"}}}, "template": "{{ q }}"},
        [{"q": "Rate a."}, {"q": "Rate b."}],
    ),
    "ultrafeedback": (
        {},
        [{"instruction": "2+2?", "generations": ["4", "5"]}, {"instruction": "Colour?", "generations": ["Blue", "7"]}],
    ),
    "prometheus-eval": (
        {},
        [{"instruction": "Capital of France?", "generation": "Paris."}, {"instruction": "3*3?", "generation": "6"}],
    ),
    "pairwise-judge": (
        {},
        [
            {"instruction": "2+2?", "generations": ["4", "5"]},
            {"instruction": "Italy?", "generations": ["Milan", "Rome"]},
        ],
    ),
    "quality-scorer": (
        {},
        [{"instruction": "A prime?", "responses": ["7", "9"]}, {"instruction": "Even?", "responses": ["4", "3"]}],
    ),
    "complexity-scorer": ({}, [{"instructions": ["Say hi.", "Prove it."]}, {"instructions": ["Add.", "Sort."]}]),
    "rubric-judge": (
        {"criteria": "Be polite."},
        [{"instruction": "Refund?", "generation": "No."}, {"instruction": "Greet.", "generation": "Welcome!"}],
    ),
    "self-instruct": ({}, [{"topic": "composting"}, {"topic": "bicycles"}]),
    "evol-instruct": ({}, [{"instruction": "Write a poem."}, {"instruction": "Add 2 and 3."}]),
    "instruction-backtranslation": (
        {},
        [{"instruction": "Boil an egg?", "generation": "9 minutes."}, {"instruction": "Spain?", "generation": "Blog!"}],
    ),
    "text-classification": ({"labels": ["positive", "negative"]}, [{"text": "Broke."}, {"text": "Great!"}]),
    "evol-quality": (
        {},
        [{"instruction": "Basil?", "response": "Water it."}, {"instruction": "2+2?", "response": "4"}],
    ),
    "genstruct": ({}, [{"title": "Bees", "content": "Bees make honey."}, {"title": "Rain", "content": "It falls."}]),
    "clair": ({}, [{"task": "2+2?", "student_solution": "5"}, {"task": "Spain?", "student_solution": "Porto"}]),
    "urial": ({}, [{"instruction": "Say a."}, {"instruction": "Say b."}]),
    "magpie": (
        {"template": "chatml", "n_turns": 2},
        [{"seed": 0, "system_prompt": ""}, {"seed": 1, "system_prompt": "Be brief."}],
    ),
    "conversation": ({"n_turns": 2}, [{"topic": "rain", "instruction": ""}, {"topic": "bread", "instruction": "Hi?"}]),
    "function-calling": (
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                    },
                }
            ]
        },
        [{"topic": "the weather", "instruction": ""}, {"topic": "", "instruction": "Is it raining in Lisbon?"}],
    ),
}
REPLIES = [
    '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Lisbon"}}], "verdict": "yes", "reason": "ok"}',
    '{"score": 4, "scores": [4, 2], "rating": 4, "result": 4, "verdict": "A", "rationale": "Fine.", '
    '"labels": ["negative"], "instruction": "Write a short poem about rain.", "instructions": ["Do x.", "Do y."]}',
    "Rationale: fine.\nRating: 3\nScore: 3\nVerdict: B\n1. First.\n2. Second.",
    "not a reply any parser reads",
    None,
]


def reply(chat: ChatType, index: int) -> str | None:
    """The same answer for the same chat and generation, whoever asks and in whatever order."""
    digest = hashlib.sha256(json.dumps([chat, index]).encode()).digest()
    return REPLIES[digest[0] % len(REPLIES)]


def plain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as they read back from JSONL (tuples become lists)."""
    return [json.loads(json.dumps(row)) for row in rows]


def test_the_table_covers_every_registered_task() -> None:
    installed = {
        name for name, cls in taskloom.list_tasks().items() if not cls.__module__.startswith("taskloom_example")
    }
    assert installed == set(TASKS), "add the new task to TASKS"


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize(("num_generations", "group"), [(1, False), (2, False), (2, True)])
def test_every_driver_makes_the_same_rows(name: str, num_generations: int, group: bool, tmp_path: Path) -> None:
    fields, rows = TASKS[name]
    common = {**fields, "num_generations": num_generations, "group_generations": group}

    standalone = get_task(name, llm=ScriptedLLM(reply=reply), **common)
    standalone.load()
    processed = plain(next(standalone.process([dict(r) for r in rows])))

    piped = get_task(name, llm=ScriptedAsyncLLM(reply=reply, model="scripted"), **common)
    result = Pipeline(piped, source=[dict(r) for r in rows], name=f"recipe-{name}").run(output=tmp_path / "run")
    assert list(result.rows()) == processed

    dry = get_task(name, llm=ScriptedLLM(reply=reply), **common)
    [step] = Pipeline(dry, source=[dict(r) for r in rows], name="dry").dry_run()
    first = [row for row in processed if {k: row[k] for k in rows[0]} == plain([rows[0]])[0]]
    assert plain(step.outputs) == first
    assert step.formatted, "a dry run shows what the LLM was asked"


def mapped_pipeline(llm: Any) -> Pipeline:
    """Mappings on every kind of step: renamed inputs, renamed outputs, a shadowed column."""
    rename = get_step("rename-columns", mapping={"question": "prompt"})
    answer = get_task(
        "text-generation",
        name="answer",
        llm=llm,
        num_generations=2,
        group_generations=True,
        input_mappings={"instruction": "prompt"},
        output_mappings={"generation": "answers"},
    )
    judge = get_task(
        "pairwise-judge",
        name="judge",
        llm=llm,
        input_mappings={"instruction": "prompt", "generations": "answers"},
        output_mappings={"verdict": "winner"},
    )
    keep = get_step("keep-columns", columns=["text", "winner"], input_mappings={"text": "prompt"})
    return Pipeline([rename, answer, judge, keep], name="mapped")


def test_a_mapping_heavy_pipeline_is_the_same_through_every_driver(tmp_path: Path) -> None:
    rows = [{"question": "2+2?", "instruction": "kept as is"}, {"question": "Capital of Italy?", "instruction": "x"}]
    by_run = list(
        mapped_pipeline(ScriptedAsyncLLM(reply=reply, model="scripted")).run(source=rows, output=tmp_path / "r").rows()
    )

    by_process = [dict(r) for r in rows]
    for step in mapped_pipeline(ScriptedLLM(reply=reply)).steps.values():
        step.load()
        by_process = plain(next(step.process(by_process)))
    assert by_run == by_process
    assert set(by_run[0]) == {"prompt", "winner"}

    report = mapped_pipeline(ScriptedLLM(reply=reply)).dry_run(source=rows)
    assert plain(report[-1].outputs) == by_process[:1]
    assert report[1].inputs[0]["instruction"] == "kept as is", "a shadowed column survives the mapping"


def test_keep_columns_with_a_mapping_is_the_same_standalone_and_in_a_run(tmp_path: Path) -> None:
    def step() -> Any:
        return get_step("keep-columns", columns=["a"], input_mappings={"a": "x"})

    rows = [{"x": 1, "y": 2}]
    assert next(step().process(rows)) == [{"x": 1}]
    assert list(Pipeline(step(), source=rows).run(output=tmp_path / "k").rows()) == [{"x": 1}]
    assert Pipeline(step(), source=rows).dry_run()[0].outputs == [{"x": 1}]
