"""What a task may send and how a row that cannot be sent is kept: raw text, RowInputError, rows from nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from taskloom import Pipeline
from taskloom.errors import BadRequestError, RowInputError
from taskloom.llms.inputs import chat_messages
from taskloom.llms.limits import estimate_tokens
from taskloom.pipeline.graph import PipelineError
from taskloom.pipeline.sources import RowsSource
from taskloom.plugin import Call, ChatType, Row, Source, StepColumns, Task
from taskloom.testing import ScriptedAsyncLLM, ScriptedLLM


class Completes(Task):
    """Sends each row's ``text`` as raw text; a row whose text is missing cannot be asked."""

    needs_raw_text: ClassVar[bool] = True

    @property
    def inputs(self) -> StepColumns:
        return {"text": False}

    @property
    def outputs(self) -> StepColumns:
        return ["completion"]

    def format_input(self, input: Row) -> ChatType:
        if not input.get("text"):
            raise RowInputError("this row has no text to complete")
        return str(input["text"])

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        return {"completion": output}


class FromNothing(Completes):
    """Makes its own rows when a pipeline starts with it."""

    def own_source(self) -> Source | None:
        return RowsSource(rows=[{"text": f"Row {i}:"} for i in range(3)])


def test_a_task_that_needs_raw_text_refuses_a_chat_only_llm_naming_both() -> None:
    with pytest.raises(ValueError, match=r"task 'completes' .*needs an LLM that completes raw text.*\(chat-api\)"):
        Completes(llm=ScriptedLLM(model="chat-api", raw_text=False))


def test_raw_text_reaches_the_llm_as_it_is() -> None:
    llm = ScriptedLLM(replies=[" the end."])
    task = Completes(llm=llm)
    task.load()
    [row] = next(task.process([{"text": "Once upon a time"}]))
    assert llm.calls[0]["input"] == "Once upon a time"
    assert row["completion"] == " the end."
    assert row["distilabel_metadata"]["raw_input_completes"] == "Once upon a time"


def test_a_row_that_cannot_be_asked_records_why_and_the_others_are_asked(tmp_path: Path) -> None:
    llm = ScriptedAsyncLLM(replies=["ok"])
    rows = [{"text": "a"}, {"text": ""}, {"text": "c"}]
    result = Pipeline(Completes(llm=llm), source=rows).run(output=tmp_path, progress=None)
    made = list(result.rows())
    assert [row["completion"] for row in made] == ["ok", None, "ok"]
    assert made[1]["distilabel_metadata"]["error_completes"] == "RowInputError: this row has no text to complete"
    assert [call["input"] for call in llm.calls] == ["a", "c"]
    assert result.stats.steps["completes"].rows_failed == 1
    # A batch of nothing but such rows asks nothing at all.
    task = Completes(llm=ScriptedLLM())
    task.load()
    [row] = next(task.process([{"text": None}]))
    assert row["completion"] is None and not task.llm.calls  # type: ignore[union-attr]


def test_a_pipeline_may_start_from_a_step_that_makes_its_own_rows(tmp_path: Path) -> None:
    task = FromNothing(llm=ScriptedLLM(replies=["x"]))
    result = Pipeline(task).run(output=tmp_path, progress=None)
    assert [row["text"] for row in result.rows()] == ["Row 0:", "Row 1:", "Row 2:"]
    with pytest.raises(PipelineError, match="makes its own rows"):
        Pipeline(task, source=[{"text": "given"}]).validate()
    with pytest.raises(PipelineError, match="has no source"):
        Pipeline(Completes(llm=ScriptedLLM())).validate()


def test_raw_text_given_by_hand_to_a_chat_only_provider_is_a_row_error() -> None:
    with pytest.raises(BadRequestError, match="does not complete raw text"):
        chat_messages("plain text", ScriptedLLM(raw_text=False))


def test_token_estimates_read_raw_text_and_content_parts() -> None:
    assert estimate_tokens("x" * 400, 10) == 400 // 4 + 1 + 10
    parts: Any = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "y" * 40},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        }
    ]
    with_image = estimate_tokens(parts, None)
    without = estimate_tokens([{"role": "user", "content": "y" * 40}], None)
    assert with_image - without == 1_000


class Measures(Task):
    """Asks the LLM, then runs a function of the answer off the loop (``Call.run``)."""

    ran: ClassVar[list[str]] = []

    @property
    def inputs(self) -> StepColumns:
        return ["text"]

    @property
    def outputs(self) -> StepColumns:
        return ["length"]

    def format_input(self, input: Row) -> ChatType:
        return [{"role": "user", "content": str(input["text"])}]

    def plan(self, input: Row, chat: ChatType) -> Any:
        import threading

        [answer] = yield [Call(chat)]
        text = answer["generations"][0] or ""

        def measure() -> Any:
            Measures.ran.append(threading.current_thread().name)
            return {"generations": [str(len(text))], "statistics": {}}

        [measured] = yield [Call([], run=measure)]
        return measured

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        return {"length": int(output or 0)}


def test_a_plans_own_work_runs_beside_the_loop_uncached_and_never_in_an_estimate(tmp_path: Path) -> None:
    import threading

    Measures.ran.clear()
    llm = ScriptedAsyncLLM(replies=["four"])
    task = Measures(llm=llm)
    first = Pipeline(task, source=[{"text": "a"}, {"text": "b"}]).run(output=tmp_path, progress=None)
    assert [row["length"] for row in first.rows()] == [4, 4]
    assert len(Measures.ran) == 2 and threading.main_thread().name not in Measures.ran
    assert first.stats.steps["measures"].requests == 2  # the run calls are not requests
    again = Pipeline(task, source=[{"text": "a"}, {"text": "b"}]).run(output=tmp_path, progress=None)
    assert again.stats.steps["measures"].requests == 0 and len(Measures.ran) == 4  # run again, not cached
    Pipeline(Measures(llm=ScriptedLLM(replies=["x"])), source=[{"text": "a"}]).estimate()
    assert len(Measures.ran) == 4
    sync = Measures(llm=ScriptedLLM(replies=["seven!"]))
    sync.load()
    [row] = next(sync.process([{"text": "c"}]))
    assert row["length"] == 6
