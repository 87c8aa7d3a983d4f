"""The Task behaviour docs/task-semantics.md promises, checked row by row."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from taskloom import MissingColumnError, Task, TextGeneration, get_task
from taskloom.testing import ScriptedAsyncLLM, ScriptedLLM
from taskloom.typing import ChatType, Row

SPAIN = "What's the capital of Spain?"
MADRID = "The capital of Spain is Madrid."


def run(task: Task, rows: list[Row]) -> list[Row]:
    task.load()
    try:
        return next(task.process(rows))
    finally:
        task.unload()


def test_standalone_text_generation_matches_the_spec_example() -> None:
    task = get_task("text-generation", llm=ScriptedLLM(model="SmolLM2", replies=[MADRID]))
    [row] = run(task, [{"instruction": SPAIN}])
    assert row == {
        "instruction": SPAIN,
        "generation": MADRID,
        "distilabel_metadata": {
            "raw_output_text-generation": MADRID,
            "raw_input_text-generation": [{"role": "user", "content": SPAIN}],
            "statistics_text-generation": {"input_tokens": 5, "output_tokens": 6},
        },
        "model_name": "SmolLM2",
    }
    assert list(row["distilabel_metadata"]) == [
        "raw_output_text-generation",
        "raw_input_text-generation",
        "statistics_text-generation",
    ]


def test_num_generations_gives_one_row_per_generation() -> None:
    task = TextGeneration(llm=ScriptedLLM(replies=["a", "b", "c"]), num_generations=3)
    rows = run(task, [{"instruction": "x"}])
    assert [r["generation"] for r in rows] == ["a", "b", "c"]
    assert all(r["instruction"] == "x" and r["model_name"] == "scripted" for r in rows)
    assert [r["distilabel_metadata"]["raw_output_text-generation"] for r in rows] == ["a", "b", "c"]


def test_group_generations_gives_lists_and_per_generation_metadata() -> None:
    task = TextGeneration(llm=ScriptedLLM(replies=["a", "b", "c"]), num_generations=3, group_generations=True)
    [row] = run(task, [{"instruction": "x"}])
    assert row["generation"] == ["a", "b", "c"]
    assert row["model_name"] == "scripted"
    meta = row["distilabel_metadata"]
    assert isinstance(meta, list) and len(meta) == 3
    assert [m["raw_output_text-generation"] for m in meta] == ["a", "b", "c"]


def test_raw_output_and_raw_input_can_be_turned_off() -> None:
    task = TextGeneration(llm=ScriptedLLM(replies=["a"]), add_raw_output=False, add_raw_input=False)
    [row] = run(task, [{"instruction": "x"}])
    assert row["distilabel_metadata"] == {"statistics_text-generation": {"input_tokens": 1, "output_tokens": 1}}


def test_metadata_keys_follow_the_task_name() -> None:
    task = TextGeneration(name="answer", llm=ScriptedLLM(replies=["a"]))
    [row] = run(task, [{"instruction": "x"}])
    assert set(row["distilabel_metadata"]) == {"raw_output_answer", "raw_input_answer", "statistics_answer"}


def test_upstream_metadata_is_kept() -> None:
    task = TextGeneration(name="second", llm=ScriptedLLM(replies=["a"]))
    [row] = run(task, [{"instruction": "x", "distilabel_metadata": {"raw_output_first": "earlier"}}])
    assert row["distilabel_metadata"]["raw_output_first"] == "earlier"
    assert row["distilabel_metadata"]["raw_output_second"] == "a"


def test_system_prompt_from_field_and_from_row() -> None:
    task = TextGeneration(llm=ScriptedLLM(), system_prompt="Be brief.")
    rows = run(task, [{"instruction": "a"}, {"instruction": "b", "system_prompt": "Be formal."}])
    assert rows[0]["distilabel_metadata"]["raw_input_text-generation"][0] == {"role": "system", "content": "Be brief."}
    assert rows[1]["distilabel_metadata"]["raw_input_text-generation"][0] == {"role": "system", "content": "Be formal."}


def test_template_builds_the_prompt_from_columns() -> None:
    task = TextGeneration(llm=ScriptedLLM(), template="Translate to {{ lang }}: {{ text }}")
    assert task.columns == ["lang", "text"]
    assert task.required_inputs() == ["lang", "text"]
    [row] = run(task, [{"lang": "French", "text": "hello"}])
    assert row["distilabel_metadata"]["raw_input_text-generation"] == [
        {"role": "user", "content": "Translate to French: hello"}
    ]


def test_template_using_an_undeclared_column_is_refused() -> None:
    with pytest.raises(ValueError, match="text"):
        TextGeneration(llm=ScriptedLLM(), template="{{ text }}", columns=["other"])


def test_missing_column_names_task_column_and_row_columns_before_any_call() -> None:
    llm = ScriptedLLM()
    task = TextGeneration(llm=llm)
    with pytest.raises(MissingColumnError) as caught:
        run(task, [{"instruction": "fine"}, {"prompt": "oops", "id": 2}])
    message = str(caught.value)
    assert "'text-generation'" in message and "'instruction'" in message
    assert "['id', 'prompt']" in message and "row 1" in message
    assert llm.calls == []


def test_optional_column_may_be_absent() -> None:
    task = TextGeneration(llm=ScriptedLLM(replies=["a"]))
    assert run(task, [{"instruction": "x"}])[0]["generation"] == "a"


def test_none_generation_gives_none_outputs_and_none_raw_output() -> None:
    task = TextGeneration(llm=ScriptedLLM(replies=[None]))
    [row] = run(task, [{"instruction": "x"}])
    assert row["generation"] is None
    assert row["distilabel_metadata"]["raw_output_text-generation"] is None
    assert row["model_name"] == "scripted"


class Pairs(Task):
    """Parses 'key=value' and echoes the row id, to prove which input each output got."""

    @property
    def inputs(self) -> list[str]:
        return ["id", "question"]

    @property
    def outputs(self) -> list[str]:
        return ["key", "value", "seen_id", "model_name"]

    def format_input(self, input: Row) -> ChatType:
        return [{"role": "user", "content": f"{input['id']}: {input['question']}"}]

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        assert output is not None and input is not None
        key, value = output.split("=")
        return {"key": key, "value": value, "seen_id": input["id"]}


def echo_id(chat: ChatType, index: int) -> str:
    row_id = chat[-1]["content"].split(":")[0]
    return "broken" if row_id == "2" else f"id{row_id}={index}"


def test_each_generation_is_formatted_with_its_own_row_in_a_large_batch() -> None:
    task = Pairs(llm=ScriptedLLM(reply=echo_id), num_generations=2)
    rows = [{"id": str(i), "question": f"q{i}"} for i in range(6)]
    out = run(task, rows)
    assert len(out) == 12
    for row in out:
        if row["id"] == "2":
            continue
        assert row["seen_id"] == row["id"]
        assert row["key"] == f"id{row['id']}"


def test_parse_failure_keeps_raw_output_even_when_add_raw_output_is_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    task = Pairs(llm=ScriptedLLM(reply=echo_id), add_raw_output=False)
    rows = [{"id": str(i), "question": "q"} for i in range(4)]
    with caplog.at_level(logging.WARNING, logger="taskloom"):
        out = run(task, rows)
    failed = out[2]
    assert failed["id"] == "2"
    assert failed["key"] is None and failed["value"] is None and failed["seen_id"] is None
    assert failed["model_name"] == "scripted"
    assert failed["distilabel_metadata"]["raw_output_pairs"] == "broken"
    assert "raw_output_pairs" not in out[0]["distilabel_metadata"]  # successful rows obey the flag
    assert out[3]["key"] == "id3"  # the batch went on
    assert "'pairs'" in caplog.text and "ValueError" in caplog.text


def test_parse_failure_in_grouped_rows_keeps_every_generation() -> None:
    replies = iter(["k=1", "garbage"])
    task = Pairs(llm=ScriptedLLM(reply=lambda chat, i: next(replies)), num_generations=2, group_generations=True)
    [row] = run(task, [{"id": "0", "question": "q"}])
    assert row["key"] == ["k", None]
    assert [m["raw_output_pairs"] for m in row["distilabel_metadata"]] == ["k=1", "garbage"]


def test_model_name_is_set_by_the_task_not_the_parser() -> None:
    class Sneaky(TextGeneration):
        def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
            return {"generation": output, "model_name": "fake"}

    [row] = run(Sneaky(llm=ScriptedLLM(model="real")), [{"instruction": "x"}])
    assert row["model_name"] == "real"


def test_failed_request_is_recorded_on_its_row_and_the_batch_goes_on() -> None:
    from taskloom.errors import GenerationError

    def flaky(chat: ChatType, index: int) -> Any:
        return GenerationError("429 after 5 retries") if chat[-1]["content"] == "bad" else "fine"

    task = TextGeneration(llm=ScriptedAsyncLLM(reply=flaky))
    out = run(task, [{"instruction": "ok"}, {"instruction": "bad"}, {"instruction": "ok"}])
    assert [r["generation"] for r in out] == ["fine", None, "fine"]
    assert "429 after 5 retries" in out[1]["distilabel_metadata"]["error_text-generation"]
    assert "error_text-generation" not in out[0]["distilabel_metadata"]


def test_other_llm_errors_stop_the_batch() -> None:
    task = TextGeneration(llm=ScriptedAsyncLLM(replies=[PermissionError("bad key")]))
    with pytest.raises(PermissionError):
        run(task, [{"instruction": "x"}])


def test_llm_returning_wrong_number_of_outputs_is_an_error() -> None:
    class Short(ScriptedLLM):
        def complete(self, inputs: Any, num_generations: int, options: Any) -> Any:
            return super().complete(inputs[:1], num_generations, options)

    with pytest.raises(Exception, match="returned 1 outputs for 2 inputs"):
        run(TextGeneration(llm=Short()), [{"instruction": "a"}, {"instruction": "b"}])


def test_non_string_instruction_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="'instruction' must be a string") as caught:
        run(TextGeneration(llm=ScriptedLLM()), [{"instruction": None}])
    assert any("row 0" in note for note in caught.value.__notes__)


def test_chat_generation() -> None:
    task = get_task("chat-generation", llm=ScriptedLLM(replies=["Hi!"]))
    chat = [{"role": "system", "content": "s"}, {"role": "user", "content": "hello"}]
    [row] = run(task, [{"messages": chat}])
    assert row["generation"] == "Hi!"
    assert row["distilabel_metadata"]["raw_input_chat-generation"] == chat
    with pytest.raises(ValueError, match="last message"):
        run(task, [{"messages": [{"role": "assistant", "content": "x"}]}])


def test_generation_kwargs_reach_the_llm() -> None:
    llm = ScriptedLLM(generation_kwargs={"temperature": 0.1})
    run(TextGeneration(llm=llm), [{"instruction": "x"}])
    assert llm.calls[0]["kwargs"] == {"temperature": 0.1}


def test_process_is_a_generator_of_batches() -> None:
    task = TextGeneration(llm=ScriptedLLM())
    batches = list(task.process([{"instruction": "x"}]))
    assert len(batches) == 1 and len(batches[0]) == 1


def test_input_and_output_mappings() -> None:
    task = TextGeneration(
        llm=ScriptedLLM(replies=["a"]),
        input_mappings={"instruction": "prompt"},
        output_mappings={"generation": "answer"},
    )
    [row] = run(task, [{"prompt": "q", "id": 1}])
    assert row["prompt"] == "q" and row["answer"] == "a" and row["id"] == 1
    assert "instruction" not in row and "generation" not in row
    with pytest.raises(MissingColumnError, match="'prompt'"):
        run(task, [{"instruction": "q"}])


def test_sync_llm_giving_up_on_a_batch_records_the_error_on_every_row() -> None:
    from taskloom.errors import GenerationError

    class Down(ScriptedLLM):
        def complete(self, inputs: Any, num_generations: int, options: Any) -> Any:
            raise GenerationError("service unavailable after 3 retries")

    out = run(TextGeneration(llm=Down(), num_generations=2), [{"instruction": "a"}, {"instruction": "b"}])
    assert len(out) == 4
    assert all(r["generation"] is None for r in out)
    assert all("service unavailable" in r["distilabel_metadata"]["error_text-generation"] for r in out)
