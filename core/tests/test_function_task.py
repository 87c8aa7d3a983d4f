"""Tasks made from a template and a parser function."""

from __future__ import annotations

import pytest

from taskloom import Task, load_task, task
from taskloom.testing import ScriptedLLM
from taskloom.testing.conformance import TaskConformance


@task("Summarise in one sentence:\n{{ text }}", outputs=["summary"])
def summarise(output: str) -> str:
    """Summarise a text in one sentence."""
    return output.strip()


@task(
    "Rate {{ answer }} for the question {{ question }} from 1 to 5.",
    outputs=["score", "reason"],
    system_prompt="You grade answers about {{ topic }}.",
    name="grader",
)
def grade(output: str, row: dict) -> dict:
    score, _, reason = output.partition(" ")
    if not score.isdigit():
        raise ValueError(f"no score in {output!r}")
    return {"score": int(score), "reason": reason}


def test_decorator_makes_a_task_class() -> None:
    assert issubclass(summarise, Task)
    t = summarise(llm=ScriptedLLM(replies=["  Short.  "]))
    assert t.name == "summarise"
    assert t.inputs == ["text"]
    assert t.outputs == ["summary", "model_name"]
    t.load()
    [row] = next(t.process([{"text": "A long text."}]))
    assert row["summary"] == "Short."
    assert row["distilabel_metadata"]["raw_input_summarise"] == [
        {"role": "user", "content": "Summarise in one sentence:\nA long text."}
    ]


def test_parser_with_row_dict_result_system_template_and_failure() -> None:
    t = grade(llm=ScriptedLLM(replies=["4 clear and right", "great!"]))
    assert t.name == "grader"
    assert sorted(t.inputs) == ["answer", "question", "topic"]
    t.load()
    rows = next(t.process([{"answer": "Paris", "question": "Capital of France?", "topic": "geography"}] * 2))
    assert rows[0]["score"] == 4 and rows[0]["reason"] == "clear and right"
    assert rows[0]["distilabel_metadata"]["raw_input_grader"][0] == {
        "role": "system",
        "content": "You grade answers about geography.",
    }
    assert rows[1]["score"] is None and rows[1]["distilabel_metadata"]["raw_output_grader"] == "great!"


def test_function_task_round_trips_through_a_dump() -> None:
    t = summarise(llm=ScriptedLLM(), num_generations=2)
    data = t.dump()
    assert data["type"] == f"{__name__}:summarise"
    assert load_task(data) == t


def test_broken_template_fails_at_definition() -> None:
    with pytest.raises(Exception, match="unexpected"):

        @task("{{ unclosed ", outputs=["x"])
        def broken(output: str) -> str:
            return output


class TestGraderConformance(TaskConformance):
    rows = [
        {"answer": "Paris", "question": "Capital of France?", "topic": "geography"},
        {"answer": "4", "question": "2+2?", "topic": "maths"},
    ]
    replies = ["5 right", "3 partly"]
    malformed_reply = "no score here"

    @pytest.fixture
    def task(self) -> Task:
        return grade(llm=ScriptedLLM())
