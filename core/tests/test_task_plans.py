"""Tasks whose answer takes several calls per row (``Task.plan``): process(), pipeline, cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from taskloom import Pipeline
from taskloom.steps import StepColumns
from taskloom.tasks.base import Call, CallPlan, Task
from taskloom.testing.scripted import ScriptedAsyncLLM, ScriptedLLM
from taskloom.typing import ChatType, GenerateOutput, Row


def _user(text: str) -> ChatType:
    return [{"role": "user", "content": text}]


class RelayTask(Task):
    """Asks a word forwards and backwards at once, then asks to join both answers: three calls."""

    registry_name: ClassVar[str | None] = None

    @property
    def inputs(self) -> StepColumns:
        return ["word"]

    @property
    def outputs(self) -> StepColumns:
        return ["joined", "model_name"]

    def format_input(self, input: Row) -> ChatType:
        return _user(f"say {input['word']}")

    def plan(self, input: Row, chat: ChatType) -> CallPlan:
        n = self.num_generations
        forwards, backwards = yield [Call(chat, n), Call(_user(f"say {input['word'][::-1]}"), n)]
        joins = [
            Call(_user(f"join {a} + {b}"), 1, first_index=i)
            for i, (a, b) in enumerate(zip(forwards["generations"], backwards["generations"], strict=True))
        ]
        joined = yield joins
        texts = [
            json.dumps([a, b, out["generations"][0]])
            for a, b, out in zip(forwards["generations"], backwards["generations"], joined, strict=True)
        ]
        tokens = [sum(o["statistics"]["output_tokens"][0] for o in (forwards, backwards, j)) for j in joined]
        result: GenerateOutput = {
            "generations": texts,
            "statistics": {"input_tokens": [1] * n, "output_tokens": tokens},
        }
        return result

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        return {"joined": json.loads(output or "null")[-1]}


def _echo(chat: ChatType, index: int) -> str:
    return f"<{chat[-1]['content']}#{index}>"


def test_process_drives_every_call_of_the_plan() -> None:
    llm = ScriptedLLM(reply=_echo)
    task = RelayTask(name="relay", llm=llm, num_generations=2)
    task.load()
    [rows] = list(task.process([{"word": "ab"}, {"word": "cd"}]))
    expected = [f"<join <say {w}#{g}> + <say {w[::-1]}#{g}>#0>" for w in ("ab", "cd") for g in (0, 1)]
    assert [r["joined"] for r in rows] == expected
    assert rows[0]["distilabel_metadata"]["raw_input_relay"] == _user("say ab")  # the row's own chat
    assert len(llm.calls) == 2 * (2 + 2)  # per row: two asked at once, then one join per generation


class CountingLLM(ScriptedLLM):
    """Counts calls to ``generate``: a sync LLM must still get whole batches from plans."""

    registry_name: ClassVar[str | None] = None

    def complete(self, inputs: Any, num_generations: int, options: Any) -> list[GenerateOutput]:
        self.__dict__["batches"] = [*self.__dict__.get("batches", []), len(inputs)]
        return super().complete(inputs, num_generations, options)


def test_process_batches_the_calls_of_every_row_together() -> None:
    llm = CountingLLM(reply=_echo)
    task = RelayTask(name="relay", llm=llm, num_generations=2)
    task.load()
    [rows] = list(task.process([{"word": w} for w in ("ab", "cd", "ef")]))
    assert len(rows) == 6
    # Step 1: both chats of all three rows, in one call (same count); step 2: the six joins.
    assert llm.__dict__["batches"] == [6, 6]


def test_pipeline_runs_plans_and_a_rerun_asks_nothing_again(tmp_path: Path) -> None:
    rows = [{"word": w} for w in ("ab", "cd", "ef")]
    first = ScriptedAsyncLLM(reply=_echo)
    result = Pipeline(RelayTask(name="relay", llm=first, num_generations=2), source=rows, name="p").run(
        output=tmp_path / "run", progress=None
    )
    assert len(first.calls) == 3 * 4
    out = list(result.rows())
    assert [r["joined"] for r in out[:2]] == ["<join <say ab#0> + <say ba#0>#0>", "<join <say ab#1> + <say ba#1>#0>"]
    assert result.stats.steps["relay"].requests == 12

    again = ScriptedAsyncLLM(reply=_echo)
    rerun = Pipeline(RelayTask(name="relay", llm=again, num_generations=2), source=rows, name="p").run(
        output=tmp_path / "run", progress=None
    )
    assert again.calls == []  # every call of every chain came from the cache
    assert list(rerun.rows()) == out


def test_a_grouped_rows_metadata_is_carried_on_by_the_next_task() -> None:
    """A judge reading grouped generations keeps the answers' raw outputs, as lists."""
    from taskloom import get_task

    answer = get_task("text-generation", name="answer", llm=ScriptedLLM(replies=["one", "two"]), num_generations=2)
    answer = answer.model_copy(update={"group_generations": True})
    answer.load()
    [grouped] = next(answer.process([{"instruction": "count"}]))
    judge = get_task("text-generation", name="judge", llm=ScriptedLLM(replies=["fine"]))
    judge.load()
    [judged] = next(judge.process([grouped]))
    meta = judged["distilabel_metadata"]
    assert meta["raw_output_answer"] == ["one", "two"]
    assert meta["raw_output_judge"] == "fine"
