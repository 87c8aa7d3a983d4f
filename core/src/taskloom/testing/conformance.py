"""Conformance suites: subclass them so your LLM or task is checked the way ours are.

    from taskloom.testing.conformance import LLMConformance

    class TestAcmeLLM(LLMConformance):
        @pytest.fixture
        def llm(self):
            return AcmeLLM(model="acme-small")

Every ``test_*`` method below then runs against your object. Class attributes (``chat``,
``generation_kwargs``, ``rows``, ``malformed_reply``...) adapt the suite without copying it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from pydantic import SecretStr

from taskloom.errors import MissingColumnError
from taskloom.llms import LLM, AsyncLLM
from taskloom.llms.options import GenerationOptions, OptionError
from taskloom.registry import load_llm, load_task
from taskloom.steps import columns_as_dict
from taskloom.tasks.base import METADATA, Task
from taskloom.testing.scripted import ScriptedLLM
from taskloom.typing import ChatType, Row


def _secrets(model: Any) -> list[str]:
    return [
        value.get_secret_value()
        for value in vars(model).values()
        if isinstance(value, SecretStr) and value.get_secret_value()
    ]


class LLMConformance:
    """Checks every LLM must pass: output shapes, statistics, dumps, secrets, sync use."""

    chat: ChatType = [{"role": "user", "content": "Say hello in one word."}]
    system_chat: ChatType = [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Say hello."},
    ]
    generation_kwargs: dict[str, Any] = {}
    """Kwargs for every call here: keep real models quick, e.g. ``{"max_new_tokens": 16}``."""

    @pytest.fixture
    def llm(self) -> LLM:
        """Override: return the LLM under test, not loaded."""
        raise NotImplementedError("define an `llm` fixture returning the LLM under test")

    @pytest.fixture
    def loaded_llm(self, llm: LLM) -> Iterator[LLM]:
        llm.load()
        try:
            yield llm
        finally:
            llm.unload()

    def _generate(self, llm: LLM, inputs: list[ChatType], num_generations: int = 1) -> list[Any]:
        outputs = llm.generate(inputs, num_generations=num_generations, **self.generation_kwargs)
        assert isinstance(outputs, list)
        assert len(outputs) == len(inputs), "generate must return one output per input"
        for output in outputs:
            generations = output["generations"]
            assert len(generations) == num_generations
            assert all(g is None or isinstance(g, str) for g in generations)
            statistics = output.get("statistics", {})
            for key in ("input_tokens", "output_tokens"):
                counts = statistics.get(key)
                if isinstance(counts, list):
                    assert len(counts) == num_generations, f"statistics[{key!r}]: one count per generation"
                    assert all(isinstance(n, int) and n >= 0 for n in counts)
                elif counts is not None:  # one count for all the generations of this input
                    assert isinstance(counts, int) and counts >= 0, f"statistics[{key!r}] must be counts"
        return outputs

    def test_options_are_declared(self, llm: LLM) -> None:
        """Options come from one pydantic model: the shared names, each described."""
        assert issubclass(llm.Options, GenerationOptions)
        shared = set(GenerationOptions.model_fields)
        assert shared <= set(llm.Options.model_fields), "keep the shared option names"
        undocumented = [n for n, f in llm.Options.model_fields.items() if not f.description]
        assert not undocumented, f"describe every option (Field(description=...)): {undocumented}"
        for option in llm.options_info():
            assert option["name"] and option["type"]

    def test_bad_options_are_refused_naming_the_llm(self, llm: LLM) -> None:
        before = dict(llm.generation_kwargs)
        for bad in ({"temperature": "hot"}, {"temperature": -1}, {"no_such_option": 1}):
            with pytest.raises(OptionError) as caught:
                llm.set_runtime_parameters({"generation_kwargs": bad})
            message = str(caught.value)
            assert type(llm).__name__ in message and next(iter(bad)) in message and "Valid options" in message
            assert llm.generation_kwargs == before, "a refused option leaves the LLM as it was"

    def test_model_name(self, llm: LLM) -> None:
        assert isinstance(llm.model_name, str)
        assert llm.model_name

    def test_one_output_per_input(self, loaded_llm: LLM) -> None:
        outputs = self._generate(loaded_llm, [self.chat, self.system_chat, self.chat])
        assert any(g for o in outputs for g in o["generations"]), "no text came back at all"

    def test_num_generations(self, loaded_llm: LLM) -> None:
        self._generate(loaded_llm, [self.chat, self.system_chat], num_generations=2)

    def test_empty_batch(self, loaded_llm: LLM) -> None:
        assert loaded_llm.generate([], num_generations=1, **self.generation_kwargs) == []

    def test_reload(self, loaded_llm: LLM) -> None:
        loaded_llm.unload()
        loaded_llm.load()
        self._generate(loaded_llm, [self.chat])

    def test_generate_from_running_event_loop(self, loaded_llm: LLM) -> None:
        """A notebook cell calls the sync API while an event loop is running."""

        async def inside_loop() -> list[Any]:
            return self._generate(loaded_llm, [self.chat])

        assert len(asyncio.run(inside_loop())) == 1

    def test_async_batch(self, loaded_llm: LLM) -> None:
        """``agenerate_batch`` is awaitable for every LLM (a sync one runs in a worker thread)."""
        batch = loaded_llm.agenerate_batch([self.chat, self.chat], 1, **self.generation_kwargs)
        if isinstance(loaded_llm, AsyncLLM):
            outputs = loaded_llm.run_sync(batch)
        else:
            outputs = asyncio.run(batch)
        assert len(outputs) == 2
        assert all(len(o["generations"]) == 1 for o in outputs)

    def test_generation_kwargs_are_runtime_parameters(self, llm: LLM) -> None:
        names = [p["name"] for p in llm.runtime_parameters_info()]
        assert "generation_kwargs" in names
        llm.set_runtime_parameters({"generation_kwargs": dict(self.generation_kwargs)})
        assert llm.generation_kwargs == {**llm.generation_kwargs, **self.generation_kwargs}

    def test_dump_round_trip(self, llm: LLM) -> None:
        data = llm.dump()
        json.dumps(data)  # plain data only
        rebuilt = load_llm(data)
        assert rebuilt.dump() == data
        if not _secrets(llm):  # a dump leaves secrets out, so only then are the two equal
            assert rebuilt == llm, "load_llm(llm.dump()) must rebuild an equal LLM"

    def test_secrets_never_shown(self, llm: LLM) -> None:
        shown = json.dumps(llm.dump()) + repr(llm) + str(llm) + repr(llm.runtime_parameters_info())
        for secret in _secrets(llm):
            assert secret not in shown


def _llm(task: Task) -> LLM:
    assert task.llm is not None
    return task.llm


class TaskConformance:
    """Checks every task must pass, run with a scripted LLM so they are fast and exact."""

    rows: list[Row] = []
    """Override: at least two valid, distinct input rows."""

    replies: list[str | None] = ["A reply."]
    """Well-formed replies the task can parse, cycled through."""

    malformed_reply: str | None = None
    """A reply ``format_output`` cannot parse; set it to check that the raw output is kept."""

    @pytest.fixture
    def task(self) -> Task:
        """Override: return the task under test (its LLM is replaced by a scripted one)."""
        raise NotImplementedError("define a `task` fixture returning the task under test")

    def _scripted(self, task: Task, replies: list[str | None], **fields: Any) -> Task:
        scripted = task.model_copy(update={"llm": ScriptedLLM(replies=replies), **fields})
        scripted.load()
        return scripted

    def _run(self, task: Task, rows: list[Row]) -> list[Row]:
        batches = list(task.process([dict(r) for r in rows]))
        return [row for batch in batches for row in batch]

    def test_has_rows(self) -> None:
        assert len(self.rows) >= 2, "set `rows` to at least two valid input rows"

    def test_declares_columns(self, task: Task) -> None:
        outputs = columns_as_dict(task.outputs)
        assert "model_name" in outputs, "outputs must include model_name"
        assert task.output_columns(), "a task outputs at least one column besides model_name"
        assert columns_as_dict(task.inputs), "a task reads at least one column"

    def test_each_row_keeps_its_own_input(self, task: Task) -> None:
        scripted = self._scripted(task, self.replies, num_generations=1, group_generations=False)
        out = self._run(scripted, self.rows)
        assert len(out) == len(self.rows)
        for source, row in zip(self.rows, out, strict=True):
            for column, value in source.items():
                if column != METADATA:
                    assert row[column] == value, "an output row must carry its own input row"
            for column in scripted.output_columns():
                assert column in row, f"output column {column!r} missing"
            assert row["model_name"] == _llm(scripted).model_name
            assert f"raw_output_{scripted.name}" in row[METADATA]
            assert f"raw_input_{scripted.name}" in row[METADATA]

    def test_num_generations_and_grouping(self, task: Task) -> None:
        flat = self._scripted(task, self.replies, num_generations=2)
        assert len(self._run(flat, self.rows)) == 2 * len(self.rows)
        grouped = self._scripted(task, self.replies, num_generations=2, group_generations=True)
        out = self._run(grouped, self.rows)
        assert len(out) == len(self.rows)
        for row in out:
            for column in grouped.output_columns():
                assert isinstance(row[column], list) and len(row[column]) == 2
            assert isinstance(row[METADATA], list) and len(row[METADATA]) == 2

    def test_missing_column_fails_before_any_call(self, task: Task) -> None:
        required = task.required_inputs()
        if not required:
            pytest.skip("no required input column")
        scripted = self._scripted(task, self.replies)
        broken = [dict(r) for r in self.rows]
        del broken[-1][required[0]]
        with (
            mock.patch.object(ScriptedLLM, "generate") as generate,
            pytest.raises(MissingColumnError) as caught,
        ):
            self._run(scripted, broken)
        generate.assert_not_called()
        assert required[0] in str(caught.value)
        assert scripted.name in str(caught.value)

    def test_no_text_still_makes_every_row(self, task: Task) -> None:
        """No text (refused, failed): ``format_output(None, row)`` is called and every row is kept."""
        scripted = self._scripted(task, [None])
        out = self._run(scripted, self.rows)
        assert len(out) == len(self.rows)
        for row in out:
            assert all(c in row for c in scripted.output_columns())
            assert row["model_name"] == _llm(scripted).model_name
            assert row[METADATA].get(f"raw_output_{scripted.name}") is None

    def test_unparsable_reply_keeps_raw_output(self, task: Task) -> None:
        """A reply that does not parse: outputs None, the raw text kept even with add_raw_output off.

        With ``malformed_reply`` set, that reply is used; otherwise ``format_output`` is made to
        fail on a well-formed reply, so the path is always checked.
        """
        reply = (
            self.malformed_reply if self.malformed_reply is not None else next(r for r in self.replies if r is not None)
        )
        scripted = self._scripted(task, [reply], add_raw_output=False)
        failing = (
            contextlib.nullcontext()
            if self.malformed_reply is not None
            else mock.patch.object(type(scripted), "format_output", side_effect=ValueError("unreadable"))
        )
        with failing:
            out = self._run(scripted, self.rows)
        assert out, "the rows must not be dropped"
        for row in out:
            assert all(row[c] is None for c in scripted.output_columns())
            assert row[METADATA][f"raw_output_{scripted.name}"] == reply

    def test_dump_round_trip(self, task: Task) -> None:
        data = task.dump()
        json.dumps(data)
        assert load_task(data) == task

    def test_runtime_parameters(self, task: Task) -> None:
        names = {p["name"] for p in task.runtime_parameters_info()}
        assert {"num_generations", "add_raw_output", "add_raw_input", "llm"} <= names
