"""Column steps: what rows look like after them, and what they declare for pipeline checks."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from taskloom.errors import MissingColumnError
from taskloom.pipeline.columns import CombineColumns, GroupColumns, JoinError, KeepColumns, RenameColumns
from taskloom.registry import get_step
from taskloom.steps import JoinStep, Step, columns_as_dict
from taskloom.work import run_work

META = "distilabel_metadata"


def run(step: Step, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows through a step standalone; a pipeline's driver (``work``) must give the same."""
    out = [row for part in step.process([dict(r) for r in rows]) for row in part]
    assert out == run_work(step.work([dict(r) for r in rows]))
    return out


def rebuilt(step: Step) -> Step:
    data = step.dump()
    assert data.pop("type") == type(step).registry_name
    return type(step)(**data)


# -- keep-columns ------------------------------------------------------------------------------


def test_keep_columns_keeps_listed_columns_in_order() -> None:
    step = get_step("keep-columns", columns=["b", "a"])
    assert isinstance(step, KeepColumns)
    assert step.name == "keep-columns"
    rows = [{"a": 1, "b": 2, "c": 3}]
    out = run(step, rows)
    assert out == [{"b": 2, "a": 1}]
    assert list(out[0]) == ["b", "a"]
    assert rows == [{"a": 1, "b": 2, "c": 3}]  # the input row is untouched
    assert step.required_inputs() == ["b", "a"]
    assert columns_as_dict(step.outputs) == {"b": True, "a": True}
    assert step.columns_after(["a", "b", "c"]) == ["b", "a"]
    assert rebuilt(step) == step


def test_keep_columns_reports_a_missing_column() -> None:
    with pytest.raises(MissingColumnError, match="'b'"):
        run(KeepColumns(columns=["a", "b"]), [{"a": 1}])


def test_keep_columns_with_an_input_mapping() -> None:
    step = KeepColumns(columns=["text"], input_mappings={"text": "generation"})
    assert run(step, [{"generation": "g", "other": 1}]) == [{"generation": "g"}]
    assert step.columns_after(["generation", "other"]) == ["generation"]


def test_keep_columns_needs_a_column() -> None:
    with pytest.raises(ValueError, match="columns"):
        KeepColumns(columns=[])


# -- rename-columns ----------------------------------------------------------------------------


def test_rename_columns_keeps_positions() -> None:
    step = get_step("rename-columns", mapping={"generation": "response"})
    assert isinstance(step, RenameColumns)
    out = run(step, [{"instruction": "i", "generation": "g", "model_name": "m"}])
    assert out == [{"instruction": "i", "response": "g", "model_name": "m"}]
    assert list(out[0]) == ["instruction", "response", "model_name"]
    assert step.required_inputs() == ["generation"]
    assert columns_as_dict(step.outputs) == {"response": True}
    assert step.columns_after(["instruction", "generation", "model_name"]) == ["instruction", "response", "model_name"]
    assert rebuilt(step) == step


def test_rename_columns_swaps_and_overwrites() -> None:
    swap = RenameColumns(mapping={"a": "b", "b": "a"})
    assert run(swap, [{"a": 1, "b": 2}]) == [{"b": 1, "a": 2}]
    onto = RenameColumns(mapping={"new": "old"})
    assert run(onto, [{"old": 1, "new": 2}]) == [{"old": 2}]
    assert onto.columns_after(["old", "new"]) == ["old"]


def test_rename_columns_refuses_two_columns_onto_one() -> None:
    with pytest.raises(ValueError, match=r"renamed to \['x'\]"):
        RenameColumns(mapping={"a": "x", "b": "x"})


# -- combine-columns ---------------------------------------------------------------------------


def test_combine_columns_merges_one_row_per_branch() -> None:
    step = get_step("combine-columns")
    assert isinstance(step, CombineColumns)
    assert isinstance(step, JoinStep)
    first = {"instruction": "i", "generation": "a", META: {"raw_output_a": "A"}, "model_name": "m1"}
    second = {"instruction": "i", "score": 5, META: {"raw_output_b": "B"}, "model_name": "m2"}
    before = copy.deepcopy([first, second])
    out = step.join([[first], [second]])
    assert out == [
        {
            "instruction": "i",
            "generation": "a",
            META: {"raw_output_a": "A", "raw_output_b": "B"},
            "model_name": "m2",
            "score": 5,
        }
    ]
    assert [first, second] == before  # the branch rows are untouched
    assert step.columns_after(["instruction", "generation", "score"]) == ["instruction", "generation", "score"]
    assert rebuilt(step) == step


def test_combine_columns_pairs_several_rows_per_branch() -> None:
    step = CombineColumns()
    out = step.join([[{"g": 1}, {"g": 2}], [{"s": "x"}, {"s": "y"}]])
    assert out == [{"g": 1, "s": "x"}, {"g": 2, "s": "y"}]
    assert step.join([[], []]) == []


def test_combine_columns_unequal_counts_is_an_error() -> None:
    step = CombineColumns(name="merge")
    with pytest.raises(JoinError, match=r"Step 'merge' got 2, 1 rows from its branches"):
        step.join([[{"g": 1}, {"g": 2}], [{"s": "x"}]])


def test_combine_columns_outside_a_pipeline_passes_rows_through() -> None:
    assert run(CombineColumns(), [{"a": 1}, {"a": 2}]) == [{"a": 1}, {"a": 2}]


# -- group-columns -----------------------------------------------------------------------------


def test_group_columns_collects_generations_of_two_tasks() -> None:
    step = get_step("group-columns", columns=["generation", "model_name"])
    assert isinstance(step, GroupColumns)
    a = {"instruction": "i", "generation": "A", "model_name": "m1", META: {"raw_output_a": "A"}}
    b = {"instruction": "i", "generation": "B", "model_name": "m2", META: {"raw_output_b": "B"}}
    out = step.join([[a], [b]])
    assert out == [
        {"instruction": "i", META: {"raw_output_a": "A"}, "generations": ["A", "B"], "model_names": ["m1", "m2"]}
    ]
    assert out[0][META] is not a[META]
    assert step.required_inputs() == ["generation", "model_name"]
    assert columns_as_dict(step.outputs) == {"generations": True, "model_names": True}
    assert step.columns_after(["instruction", "generation", "model_name", META]) == [
        "instruction",
        META,
        "generations",
        "model_names",
    ]
    assert rebuilt(step) == step


def test_group_columns_every_row_of_every_branch_in_order() -> None:
    step = GroupColumns(columns=["generation"], output_columns=["candidates"])
    out = step.join([[{"generation": 1}, {"generation": 2}], [{"generation": 3}]])
    assert out == [{"candidates": [1, 2, 3]}]
    assert step.join([[], []]) == []


def test_group_columns_groups_metadata_when_asked() -> None:
    step = GroupColumns(columns=["generation", META], output_columns=["generations", META])
    out = step.join([[{"generation": "A", META: {"a": 1}}], [{"generation": "B", META: {"b": 2}}]])
    assert out == [{"generations": ["A", "B"], META: [{"a": 1}, {"b": 2}]}]


def test_group_columns_missing_column_names_the_step() -> None:
    step = GroupColumns(name="collect", columns=["generation"])
    with pytest.raises(MissingColumnError, match=r"Step 'collect' requires the column 'generation'"):
        step.join([[{"generation": "A"}], [{"other": "B"}]])


def test_group_columns_output_names_must_match() -> None:
    with pytest.raises(ValueError, match="one output name per grouped column"):
        GroupColumns(columns=["a", "b"], output_columns=["x"])


def test_column_steps_run_on_the_event_loop() -> None:
    for cls in (KeepColumns, RenameColumns, CombineColumns, GroupColumns):
        assert cls.runs_in_thread is False
