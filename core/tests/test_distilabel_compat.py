"""Where distilabel 1.5.3 and taskloom used to disagree, and now do not (or differ on purpose).

Each test states the behaviour a distilabel user relies on; ``docs/differences-from-distilabel.md``
lists the differences we keep and why.
"""

from __future__ import annotations

from typing import Any, Optional

import pytest

from taskloom import Task, TextGeneration, get_task, load_task
from taskloom.component import RuntimeParameter
from taskloom.testing import ScriptedLLM
from taskloom.typing import ChatType, GenerateOutput, Row


class OneCountForAll(ScriptedLLM):
    """Reports one token count for all n generations of an input, as an API answering ``n`` does."""

    def complete(self, inputs: list[ChatType], num_generations: int, options: Any) -> list[GenerateOutput]:
        return [
            {
                "generations": [f"g{i}" for i in range(num_generations)],
                "statistics": {"input_tokens": [10], "output_tokens": 7},
            }
            for _ in inputs
        ]


def run(task: Task, rows: list[Row]) -> list[Row]:
    task.load()
    return [row for batch in task.process(rows) for row in batch]


@pytest.mark.parametrize("group", [False, True])
def test_one_count_for_all_generations_is_split_so_sums_stay_true(group: bool) -> None:
    out = run(TextGeneration(llm=OneCountForAll(), num_generations=3, group_generations=group), [{"instruction": "x"}])
    metadata = out[0]["distilabel_metadata"] if group else [row["distilabel_metadata"] for row in out]
    stats = [m["statistics_text-generation"] for m in metadata]
    assert [s["input_tokens"] for s in stats] == [4, 3, 3]
    assert [s["output_tokens"] for s in stats] == [3, 2, 2]
    assert sum(s["output_tokens"] for s in stats) == 7, "every generation has counts; their sum is what was reported"


class FromTheRow(Task):
    """A custom task that fills a column from its row even when the LLM gave no text."""

    @property
    def inputs(self) -> list[str]:
        return ["text"]

    @property
    def outputs(self) -> list[str]:
        return ["answer", "source", "model_name"]

    def format_input(self, input: Row) -> ChatType:
        return [{"role": "user", "content": input["text"]}]

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        assert input is not None
        if output is None and input["text"] == "boom":
            raise ValueError("cannot work without text")
        return {"answer": output, "source": input["text"]}


def test_no_text_still_calls_format_output_with_none() -> None:
    out = run(FromTheRow(llm=ScriptedLLM(replies=[None])), [{"text": "a"}, {"text": "boom"}])
    assert out[0]["answer"] is None and out[0]["source"] == "a", "format_output(None, row) filled the row's column"
    assert out[1]["answer"] is None and out[1]["source"] is None, "it raised: the parse-failure rule applies"
    assert out[1]["distilabel_metadata"]["raw_output_from-the-row"] is None


class WithLateParameters(TextGeneration):
    budget: RuntimeParameter[int]
    maybe: Optional[RuntimeParameter[int]] = None  # noqa: UP045  (distilabel's spelling, on purpose)
    either: RuntimeParameter[int] | None = None


def test_a_runtime_parameter_without_default_is_none_until_set() -> None:
    task = WithLateParameters(llm=ScriptedLLM())
    assert task.budget is None
    names = [p["name"] for p in task.runtime_parameters_info()]
    assert {"budget", "maybe", "either"} <= set(names), "Optional[RuntimeParameter[int]] is a runtime parameter too"
    info = {p["name"]: p for p in task.runtime_parameters_info() if "optional" in p}
    assert info["budget"]["optional"] is False and info["maybe"]["optional"] is True
    task.set_runtime_parameters({"budget": 5, "maybe": 2})
    assert (task.budget, task.maybe) == (5, 2)
    with pytest.raises(ValueError, match="budget"):
        task.set_runtime_parameters({"budget": "lots"})
    assert load_task(task.dump()) == task


def test_columns_may_be_one_name() -> None:
    task = TextGeneration(llm=ScriptedLLM(replies=["ok"]), columns="question")
    assert task.columns == ["question"]
    assert run(task, [{"question": "Why?"}])[0]["generation"] == "ok"


def test_building_a_task_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """No config file is read and no plugin loaded until the default LLM is needed."""
    import taskloom.config

    def refuse() -> Any:
        raise AssertionError("the default LLM was resolved while building a task")

    monkeypatch.setattr(taskloom.config, "default_llm", refuse)
    task = TextGeneration()
    assert task.llm is None
    assert load_task(task.dump()).llm is None, "a dump without an LLM loads without one"
    monkeypatch.undo()
    monkeypatch.setenv("TASKLOOM_DEFAULT_LLM", "scripted")
    assert get_task("text-generation").llm is not None, "get_task still gives the default LLM"
    late = TextGeneration()
    late.load()  # or at load()
    assert type(late.llm) is ScriptedLLM
