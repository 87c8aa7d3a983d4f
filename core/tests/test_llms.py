"""LLM and AsyncLLM: what a provider writes, and what it gets for free."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from pydantic import Field, SecretStr

from taskloom import LLM, AsyncLLM, TextGeneration, load_llm
from taskloom.plugin import GenerationOptions, OptionError
from taskloom.testing import ScriptedAsyncLLM
from taskloom.testing.conformance import LLMConformance
from taskloom.typing import ChatType, GenerateOutput


class Echo(LLM):
    """A minimal sync LLM: model_name, its options and complete."""

    @property
    def model_name(self) -> str:
        return "echo"

    class Options(GenerationOptions):
        temperature: float | None = Field(default=1.0, ge=0, description="ignored, but an option.")

    def complete(self, inputs: list[ChatType], num_generations: int, options: Any) -> list[GenerateOutput]:
        return [{"generations": [chat[-1]["content"]] * num_generations, "statistics": {}} for chat in inputs]


class Upper(AsyncLLM):
    """A minimal async LLM: model_name (as a field), its options and acomplete."""

    model_name: str = "upper"
    api_key: SecretStr | None = None

    class Options(GenerationOptions):
        max_new_tokens: int | None = Field(default=8, ge=1, description="Longest answer, in characters.")

    async def acomplete(self, input: ChatType, num_generations: int, options: Any) -> GenerateOutput:
        await asyncio.sleep(0)
        text = input[-1]["content"].upper()[: options.max_new_tokens]
        return {
            "generations": [text] * num_generations,
            "statistics": {"input_tokens": [1] * num_generations, "output_tokens": [1] * num_generations},
        }


def test_minimal_sync_llm_runs_a_task() -> None:
    task = TextGeneration(llm=Echo())
    task.load()
    assert next(task.process([{"instruction": "hi"}]))[0]["generation"] == "hi"


def test_minimal_async_llm_runs_a_task_and_model_name_may_be_a_field() -> None:
    task = TextGeneration(llm=Upper(), num_generations=2)
    task.load()
    rows = next(task.process([{"instruction": "hi"}, {"instruction": "yo"}]))
    task.unload()
    assert [r["generation"] for r in rows] == ["HI", "HI", "YO", "YO"]
    assert Upper(model_name="other").model_name == "other"


def test_llm_without_model_name_is_refused_at_construction() -> None:
    class Nameless(LLM):
        def complete(self, inputs: Any, num_generations: int, options: Any) -> Any:
            return []

    with pytest.raises(TypeError, match="must define model_name"):
        Nameless()


def test_async_llm_without_agenerate_cannot_be_built() -> None:
    class Incomplete(AsyncLLM):
        model_name: str = "x"

    with pytest.raises(TypeError, match="acomplete"):
        Incomplete()  # type: ignore[abstract]


SHARED = ["temperature", "top_p", "max_new_tokens", "stop", "seed", "structured_output"]


def test_generation_options_are_declared_in_a_model() -> None:
    assert list(Echo().generation_parameters()) == SHARED
    assert Echo().generation_parameters()["temperature"] == "ignored, but an option."
    defaults = {o["name"]: o["default"] for o in Upper.options_info()}
    assert defaults["max_new_tokens"] == 8
    assert Upper().options().max_new_tokens == 8


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"top_k": 3}, "unknown option 'top_k'"),
        ({"temperature": "hot"}, "option 'temperature' = 'hot'"),
        ({"temperature": -0.5}, "option 'temperature' = -0.5"),
        ({"top_p": 0}, "option 'top_p' = 0"),
        ({"top_p": 1.5}, "option 'top_p' = 1.5"),
        ({"max_new_tokens": 0}, "option 'max_new_tokens' = 0"),
        ({"stop": "END"}, "option 'stop' = 'END'"),
    ],
)
def test_a_bad_option_is_refused_with_what_would_be_valid(given: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match="Echo") as at_construction:
        Echo(generation_kwargs=given)
    assert named in str(at_construction.value)
    assert "Valid options: temperature (float | None, >= 0)" in str(at_construction.value)
    llm = Echo()
    with pytest.raises(OptionError) as at_runtime:
        llm.set_runtime_parameters({"generation_kwargs": given})
    assert named in str(at_runtime.value) and "Echo" in str(at_runtime.value)
    assert llm.generation_kwargs == {}, "a refused option changes nothing"
    with pytest.raises(OptionError, match=named.split(" =")[0]):
        llm.generate([[{"role": "user", "content": "x"}]], **given)


def test_an_old_style_provider_is_refused_with_what_to_change() -> None:
    with pytest.raises(TypeError, match=r"overrides generate\(\).*complete\(self, inputs, num_generations, options\)"):

        class OldStyle(LLM):
            model_name: str = "old"

            def generate(self, inputs: Any, num_generations: int = 1, temperature: float = 1.0) -> Any:
                return []

    with pytest.raises(TypeError, match=r"overrides agenerate\(\).*acomplete"):

        class OldAsync(AsyncLLM):
            model_name: str = "old"

            async def agenerate(self, input: Any, num_generations: int = 1, **kwargs: Any) -> Any:
                return {}


def test_generation_kwargs_are_runtime_parameters() -> None:
    llm = Upper()
    llm.set_runtime_parameters({"generation_kwargs": {"max_new_tokens": 2}})
    assert llm.generate([[{"role": "user", "content": "hello"}]])[0]["generations"] == ["HE"]
    llm.set_runtime_parameters({"max_new_tokens": 3})  # a known kwarg may be given at top level
    assert llm.generation_kwargs == {"max_new_tokens": 3}
    with pytest.raises(ValueError, match="max_concurrency"):
        llm.set_runtime_parameters({"nope": 1})
    info = {p["name"]: p for p in llm.runtime_parameters_info()}
    assert [k["name"] for k in info["generation_kwargs"]["keys"]] == SHARED
    assert info["generation_kwargs"]["keys"][2]["default"] == 8
    llm.unload()


def test_async_generate_is_bounded_by_max_concurrency_and_keeps_order() -> None:
    llm = ScriptedAsyncLLM(reply=lambda chat, i: chat[-1]["content"], delay=0.01, max_concurrency=5)
    inputs = [[{"role": "user", "content": str(i)}] for i in range(40)]
    outputs = llm.generate(inputs)
    llm.unload()
    assert [o["generations"][0] for o in outputs] == [str(i) for i in range(40)]
    assert llm.max_in_flight == 5


def test_async_generate_runs_concurrently() -> None:
    llm = ScriptedAsyncLLM(delay=0.2, max_concurrency=100)
    import time

    start = time.perf_counter()
    llm.generate([[{"role": "user", "content": "x"}]] * 100)
    elapsed = time.perf_counter() - start
    llm.unload()
    assert elapsed < 2.0, f"100 requests of 0.2 s with 100 in flight took {elapsed:.1f} s"
    assert llm.max_in_flight == 100


def test_sync_facade_works_inside_a_running_event_loop() -> None:
    llm = Upper()

    async def notebook_cell() -> list[GenerateOutput]:
        return llm.generate([[{"role": "user", "content": "a"}]])

    assert asyncio.run(notebook_cell())[0]["generations"] == ["A"]
    # and again, reusing the same LLM loop after the caller's loop is gone
    assert llm.generate([[{"role": "user", "content": "b"}]])[0]["generations"] == ["B"]
    llm.unload()


def test_unload_stops_the_loop_thread() -> None:
    llm = Upper()
    llm.generate([[{"role": "user", "content": "a"}]])
    [thread] = [t for t in threading.enumerate() if t.name == "taskloom-Upper" and t.is_alive()]
    llm.unload()
    assert not thread.is_alive()


def test_secret_fields_never_appear_in_dumps_or_reprs() -> None:
    llm = Upper(api_key=SecretStr("sk-very-secret"))
    shown = json.dumps(llm.dump()) + repr(llm) + str(llm)
    assert "sk-very-secret" not in shown
    assert "api_key" not in llm.dump()
    task = TextGeneration(llm=llm)
    assert "sk-very-secret" not in json.dumps(task.dump()) + repr(task)


def test_async_llm_in_use_can_be_copied_and_pickled() -> None:
    import copy
    import pickle

    llm = Upper(max_concurrency=3)
    chat = [[{"role": "user", "content": "a"}]]
    llm.generate(chat)
    for clone in (copy.deepcopy(llm), pickle.loads(pickle.dumps(llm)), llm.model_copy(deep=True)):
        assert clone == llm
        assert clone.generate(chat)[0]["generations"] == ["A"]
        clone.unload()
    llm.unload()


def test_validation_errors_do_not_echo_secrets() -> None:
    with pytest.raises(ValueError, match="apikey") as caught:
        Upper(apikey="sk-typo-secret")
    assert "sk-typo-secret" not in str(caught.value)


def test_llm_dump_round_trip_by_import_path() -> None:
    llm = Upper(generation_kwargs={"max_new_tokens": 4}, max_concurrency=3)
    data = llm.dump()
    assert data["type"] == f"{__name__}:Upper"
    assert load_llm(data) == llm
    assert load_llm(json.dumps(data)) == llm


class TestScriptedAsyncConformance(LLMConformance):
    @pytest.fixture
    def llm(self) -> LLM:
        return ScriptedAsyncLLM(replies=["hello"])


class TestUpperConformance(LLMConformance):
    generation_kwargs = {"max_new_tokens": 4}

    @pytest.fixture
    def llm(self) -> LLM:
        return Upper()


def test_structured_output_model_dumps_as_its_json_schema() -> None:
    from pydantic import BaseModel

    class Rating(BaseModel):
        score: int

    llm = Upper(generation_kwargs={"structured_output": Rating})
    data = llm.dump()
    assert data["generation_kwargs"]["structured_output"] == Rating.model_json_schema()
    json.dumps(data)


def test_a_run_stopping_error_cancels_the_other_requests() -> None:
    started: list[str] = []

    def reply(chat: ChatType, index: int) -> Any:
        started.append(chat[-1]["content"])
        return PermissionError("401") if chat[-1]["content"] == "0" else "late"

    llm = ScriptedAsyncLLM(reply=reply, delay=0.3, max_concurrency=2)
    import time

    begin = time.perf_counter()
    with pytest.raises(PermissionError):
        llm.generate([[{"role": "user", "content": str(i)}] for i in range(20)])
    assert time.perf_counter() - begin < 1.0  # the 18 queued requests were never sent
    assert len(started) <= 2
    llm.unload()
