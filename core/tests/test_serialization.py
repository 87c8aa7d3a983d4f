"""Dumps are plain data naming classes by registry name; loading gives an equal object."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from taskloom import Task, TextGeneration, get_llm, get_task, load_task
from taskloom.testing import ScriptedLLM


def make() -> Task:
    return get_task(
        "text-generation",
        llm=get_llm("scripted", replies=["x"], generation_kwargs={"temperature": 0.2}),
        name="answers",
        num_generations=3,
        group_generations=True,
        add_raw_input=False,
        system_prompt="Be brief.",
    )


def test_dump_names_task_and_llm_by_registry_name() -> None:
    data = make().dump()
    assert data["type"] == "text-generation"
    assert data["llm"]["type"] == "scripted"
    assert data["llm"]["generation_kwargs"] == {"temperature": 0.2}
    assert data["num_generations"] == 3
    json.dumps(data)


def test_load_task_rebuilds_an_equal_task_from_dict_json_and_yaml(tmp_path: Path) -> None:
    task = make()
    data = task.dump()
    assert load_task(data) == task
    assert load_task(json.dumps(data)) == task
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_task(path) == task
    assert load_task(data) != get_task("text-generation", llm=ScriptedLLM())


def test_equality_ignores_loaded_state() -> None:
    task = make()
    fresh = load_task(task.dump())
    task.load()
    next(task.process([{"instruction": "q"}]))
    assert task == fresh


def test_subclass_of_a_registered_task_dumps_by_import_path() -> None:
    class Mine(TextGeneration):
        pass

    task = Mine(llm=ScriptedLLM(), num_generations=2)
    assert task.name == "mine"
    assert task.dump()["type"].endswith(":test_subclass_of_a_registered_task_dumps_by_import_path.<locals>.Mine")
    assert load_task(task.dump()) == task  # a class defined in a function still loads in this process


def test_columns_declared_as_plain_methods_work() -> None:
    class Plain(TextGeneration):
        def inputs(self):  # type: ignore[override]  # no @property: an easy slip
            return ["question"]

        def format_input(self, input):  # type: ignore[no-untyped-def]
            return [{"role": "user", "content": input["question"]}]

    task = Plain(llm=ScriptedLLM(replies=["a"]))
    task.load()
    assert next(task.process([{"question": "q"}]))[0]["generation"] == "a"
    with pytest.raises(ValueError, match="'question'"):
        next(task.process([{"instruction": "q"}]))


def test_unknown_field_is_refused() -> None:
    with pytest.raises(ValueError, match="num_generation"):
        TextGeneration(llm=ScriptedLLM(), num_generation=2)


def test_runtime_parameters_after_construction() -> None:
    task = make()
    task.set_runtime_parameters(
        {"num_generations": 1, "add_raw_output": False, "llm": {"generation_kwargs": {"temperature": 0.9}}}
    )
    assert task.num_generations == 1 and task.add_raw_output is False
    assert task.llm.generation_kwargs == {"temperature": 0.9}
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        task.set_runtime_parameters({"num_generations": 0})
    with pytest.raises(ValueError, match=r"no runtime parameter 'system_prompt'.*num_generations"):
        task.set_runtime_parameters({"system_prompt": "no"})
    info = {p["name"]: p for p in task.runtime_parameters_info()}
    assert set(info) == {"num_generations", "add_raw_output", "add_raw_input", "llm"}
    assert info["num_generations"]["description"] == "Number of generations per input row."
    assert info["llm"]["runtime_parameters_info"][0]["name"] == "generation_kwargs"
