"""The ``sampler`` source: distributions, conditioning, constraints, reproducibility, and every refusal."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from taskloom_synth.columns import CategoryColumn, IntegerColumn
from taskloom_synth.errors import SamplerError
from taskloom_synth.personas import shipped_personas
from taskloom_synth.sampler import SamplerSource

from taskloom import cli
from taskloom.pipeline.config import load_pipeline
from taskloom.plugin import SourceError, TaskloomError, get_source

FIELDS = {"science": ["stars", "cells"], "history": {"values": ["Rome", "Edo", "Inca"], "weights": [1, 0, 3]}}


def sampler(columns: dict[str, Any], num_rows: int = 1_000, **fields: Any) -> SamplerSource:
    source = get_source("sampler", columns=columns, num_rows=num_rows, **fields)
    assert isinstance(source, SamplerSource)
    return source


def refusal(columns: dict[str, Any], **fields: Any) -> str:
    """The message of the error building or checking such a sampler raises (it must raise)."""
    with pytest.raises(SamplerError) as caught:
        sampler(columns, **fields).check()
    assert isinstance(caught.value, SourceError) and isinstance(caught.value, TaskloomError)
    return str(caught.value)


# -- what is drawn ------------------------------------------------------------------------------


def test_category_weights_are_followed_over_many_rows() -> None:
    rows = list(sampler({"c": {"type": "category", "values": ["a", "b", "c"], "weights": [6, 3, 1]}}, 20_000).rows())
    counts = Counter(row["c"] for row in rows)
    assert counts["a"] / 20_000 == pytest.approx(0.6, abs=0.02)
    assert counts["b"] / 20_000 == pytest.approx(0.3, abs=0.02)
    assert counts["c"] / 20_000 == pytest.approx(0.1, abs=0.015)


def test_equal_chances_without_weights_and_a_zero_weight_is_never_drawn() -> None:
    rows = list(sampler({"c": {"type": "category", "values": [1, 2, 3, 4], "weights": None}}, 8_000).rows())
    counts = Counter(row["c"] for row in rows)
    assert set(counts) == {1, 2, 3, 4}
    assert all(abs(count / 8_000 - 0.25) < 0.03 for count in counts.values())
    zero = sampler({"c": {"type": "category", "values": ["x", "never", "y"], "weights": [1, 0, 1]}}, 5_000)
    assert {row["c"] for row in zero.rows()} == {"x", "y"}


def test_a_subcategory_is_drawn_from_its_parents_list_with_its_weights() -> None:
    columns = {
        "field": {"type": "category", "values": ["science", "history"]},
        "topic": {"type": "subcategory", "parent": "field", "values": FIELDS},
    }
    rows = list(sampler(columns, 10_000).rows())
    for row in rows:
        expected = FIELDS[row["field"]]
        allowed = expected if isinstance(expected, list) else expected["values"]
        assert row["topic"] in allowed
    history = Counter(row["topic"] for row in rows if row["field"] == "history")
    assert "Edo" not in history  # weight 0
    assert history["Inca"] / sum(history.values()) == pytest.approx(0.75, abs=0.03)


def test_a_parent_declared_after_its_child_is_drawn_first_and_rows_keep_the_declared_order() -> None:
    columns = {
        "topic": {"type": "subcategory", "parent": "field", "values": {"a": ["a1"], "b": ["b1"]}},
        "field": {"type": "category", "values": ["a", "b"]},
    }
    rows = list(sampler(columns, 200).rows())
    assert all(list(row) == ["topic", "field"] for row in rows)
    assert all(row["topic"] == row["field"] + "1" for row in rows)


def test_a_subcategory_of_a_subcategory_and_of_an_integer() -> None:
    columns = {
        "level": {"type": "integer", "min": 1, "max": 2},
        "kind": {"type": "subcategory", "parent": "level", "values": {1: ["easy"], 2: ["hard", "harder"]}},
        "note": {"type": "subcategory", "parent": "kind", "values": {"easy": ["e"], "hard": ["h"], "harder": ["hh"]}},
    }
    rows = list(sampler(columns, 500).rows())
    assert {(row["level"], row["kind"]) for row in rows} == {(1, "easy"), (2, "hard"), (2, "harder")}
    assert all(row["note"] == {"easy": "e", "hard": "h", "harder": "hh"}[row["kind"]] for row in rows)


def test_ranges_stay_within_their_bounds_and_reach_both_ends() -> None:
    columns = {
        "n": {"type": "integer", "min": -2, "max": 2},
        "x": {"type": "float", "min": 1.5, "max": 2.5, "decimals": 1},
        "y": {"type": "float", "min": 0, "max": 1},
        "d": {"type": "date", "start": "2024-02-27", "end": "2024-03-01", "format": "%d/%m"},
    }
    rows = list(sampler(columns, 3_000).rows())
    assert {row["n"] for row in rows} == {-2, -1, 0, 1, 2}
    assert all(1.5 <= row["x"] <= 2.5 and round(row["x"], 1) == row["x"] for row in rows)
    assert len({row["x"] for row in rows}) == 11  # 1.5, 1.6, ... 2.5
    assert all(0 <= row["y"] < 1 for row in rows) and len({row["y"] for row in rows}) > 2_900
    assert {row["d"] for row in rows} == {"27/02", "28/02", "29/02", "01/03"}  # 2024 is a leap year


def test_the_default_date_format_is_iso() -> None:
    rows = sampler({"d": {"type": "date", "start": date(2020, 1, 1), "end": date(2020, 12, 31)}}, 50).rows()
    assert all(date.fromisoformat(row["d"]).year == 2020 for row in rows)


def test_choice_from_inline_values_and_from_text_jsonl_and_csv_files(tmp_path: Path) -> None:
    (tmp_path / "cities.txt").write_text("# a comment\nOslo\n\n  Lima \nPerth\n", encoding="utf-8")
    (tmp_path / "cities.jsonl").write_text('{"city": "Oslo"}\n\n{"city": "Lima", "n": 1}\n', encoding="utf-8")
    (tmp_path / "cities.csv").write_text("\ufeffcity,n\nOslo,1\nLima,2\n", encoding="utf-8")
    columns = {
        "inline": {"type": "choice", "values": ["a", "b"]},
        "text": {"type": "choice", "file": str(tmp_path / "cities.txt")},
        "jsonl": {"type": "choice", "file": str(tmp_path / "cities.jsonl"), "field": "city"},
        "csv": {"type": "choice", "file": str(tmp_path / "cities.csv"), "field": "city"},
    }
    rows = list(sampler(columns, 600).rows())
    assert {row["inline"] for row in rows} == {"a", "b"}
    assert {row["text"] for row in rows} == {"Oslo", "Lima", "Perth"}
    assert {row["jsonl"] for row in rows} == {row["csv"] for row in rows} == {"Oslo", "Lima"}


def test_personas_come_from_the_shipped_list_or_from_a_users_file(tmp_path: Path) -> None:
    shipped = shipped_personas()
    assert len(shipped) >= 100 and len(set(shipped)) == len(shipped)
    assert all(line.endswith(".") and line.count(". ") == 0 for line in shipped)  # one sentence each
    drawn = {row["p"] for row in sampler({"p": {"type": "persona"}}, 5_000).rows()}
    assert drawn <= set(shipped) and len(drawn) > 0.9 * len(shipped)
    mine = tmp_path / "people.txt"
    mine.write_text("A tired lighthouse keeper.\nA cheerful tax inspector.\n", encoding="utf-8")
    own = {row["p"] for row in sampler({"p": {"type": "persona", "file": str(mine)}}, 100).rows()}
    assert own == {"A tired lighthouse keeper.", "A cheerful tax inspector."}


def test_column_models_can_be_given_directly_from_python() -> None:
    source = SamplerSource(columns={"c": CategoryColumn(values=["x"]), "n": IntegerColumn(min=3, max=3)}, num_rows=2)
    assert list(source.rows()) == [{"c": "x", "n": 3}, {"c": "x", "n": 3}]


# -- constraints --------------------------------------------------------------------------------


def test_every_row_meets_every_constraint() -> None:
    columns = {
        "start": {"type": "integer", "min": 0, "max": 50},
        "end": {"type": "integer", "min": 0, "max": 50},
        "kind": {"type": "category", "values": ["a", "b"]},
    }
    constraints = ["end > start", "kind == 'a' or end - start >= 10"]
    rows = list(sampler(columns, 3_000, constraints=constraints).rows())
    assert len(rows) == 3_000
    assert all(row["end"] > row["start"] for row in rows)
    assert all(row["kind"] == "a" or row["end"] - row["start"] >= 10 for row in rows)
    unconstrained = list(sampler(columns, 3_000).rows())
    assert sum(row["end"] <= row["start"] for row in unconstrained) > 1_000  # the constraint did the work


def test_iso_dates_compare_in_constraints() -> None:
    columns = {
        "opened": {"type": "date", "start": "2024-01-01", "end": "2024-01-31"},
        "closed": {"type": "date", "start": "2024-01-01", "end": "2024-01-31"},
    }
    rows = list(sampler(columns, 500, constraints=["closed >= opened"]).rows())
    assert all(row["closed"] >= row["opened"] for row in rows)


def test_an_impossible_constraint_is_refused_when_checked_naming_it_and_its_columns() -> None:
    message = refusal({"age": {"type": "integer", "min": 1, "max": 9}}, constraints=["age > 100"])
    assert "'age > 100'" in message and "reads age" in message and "none of 1,000 draws" in message


def test_constraints_that_never_hold_together_are_refused() -> None:
    message = refusal({"a": {"type": "integer", "min": 1, "max": 9}}, constraints=["a < 3", "a > 5"])
    assert "never together" in message and "'a < 3'" in message and "'a > 5'" in message


def test_the_first_row_and_rows_check_before_drawing() -> None:
    source = sampler({"a": {"type": "integer", "min": 1, "max": 9}}, constraints=["a > 9"])
    with pytest.raises(SamplerError, match="a > 9"):
        source.first_row()
    with pytest.raises(SamplerError, match="a > 9"):
        next(iter(source.rows()))


def test_a_row_that_exhausts_its_tries_is_an_error_with_the_count_never_an_endless_loop() -> None:
    # Rare enough that some row of 20,000 fails 30 tries, common enough that the check passes.
    source = sampler({"a": {"type": "integer", "min": 1, "max": 100}}, 20_000, constraints=["a <= 2"], max_tries=30)
    source.check()
    with pytest.raises(SamplerError) as caught:
        list(source.rows())
    message = str(caught.value)
    assert message.startswith("sampler row ") and "no draw out of 30" in message
    assert "'a <= 2' (reads a) failed on 30 of the 30 draws" in message and "max_tries" in message


def test_a_constraint_that_cannot_be_evaluated_says_why() -> None:
    message = refusal({"a": {"type": "integer", "min": 1, "max": 9}}, constraints=["a > 'x'"])
    assert "cannot be evaluated" in message and "TypeError" in message


def test_a_constraint_on_an_unknown_column_or_with_bad_syntax_or_a_call_is_refused_when_built() -> None:
    columns = {"a": {"type": "integer", "min": 1, "max": 9}}
    assert "reads 'b', which is not a column; the columns are a" in refusal(columns, constraints=["b > 1"])
    assert "does not parse" in refusal(columns, constraints=["a >"])
    assert "a call" in refusal(columns, constraints=["a.bit_length() > 1"])


# -- reproducibility and shards -----------------------------------------------------------------

MIXED = {
    "field": {"type": "category", "values": ["science", "history"], "weights": [3, 1]},
    "topic": {"type": "subcategory", "parent": "field", "values": FIELDS},
    "n": {"type": "integer", "min": 0, "max": 1_000},
    "x": {"type": "float", "min": 0, "max": 1, "decimals": 3},
    "when": {"type": "date", "start": "2000-01-01", "end": "2030-12-31"},
    "persona": {"type": "persona"},
}


def test_the_same_seed_gives_the_same_rows_and_another_seed_other_rows() -> None:
    first = list(sampler(MIXED, 300, seed=11, constraints=["n % 3 != 0"]).rows())
    again = list(sampler(MIXED, 300, seed=11, constraints=["n % 3 != 0"]).rows())
    other = list(sampler(MIXED, 300, seed=12, constraints=["n % 3 != 0"]).rows())
    assert first == again
    assert sum(a != b for a, b in zip(first, other, strict=True)) > 290


def test_the_rows_are_pinned_for_a_seed() -> None:
    # Changing how rows are drawn changes every dataset made with a seed: do it on purpose only.
    rows = list(sampler({"n": {"type": "integer", "min": 0, "max": 99}}, 5, seed=3).rows())
    assert [row["n"] for row in rows] == _pinned()


def _pinned() -> list[int]:
    from random import Random

    values = []
    for index in range(5):
        rng = Random((3 << 64) | index)
        values.append(int(rng.random() * 100))
    return values


@pytest.mark.parametrize("constraints", [[], ["n % 2 == 0"]])
def test_rows_between_equals_the_slice_of_rows(constraints: list[str]) -> None:
    source = sampler(MIXED, 400, seed=5, constraints=constraints)
    every = list(source.rows())
    assert source.count() == 400 == len(every)
    for start, stop in [(0, 10), (137, 263), (390, 400), (399, 1_000), (400, 410)]:
        assert list(source.rows_between(start, stop)) == every[start:stop]
    assert source.first_row() == every[0]


def test_a_row_depends_only_on_the_seed_and_its_index() -> None:
    short = list(sampler(MIXED, 50, seed=9).rows())
    long = list(sampler(MIXED, 5_000, seed=9).rows())
    assert long[:50] == short


def test_two_readers_of_one_source_do_not_disturb_each_other() -> None:
    source = sampler(MIXED, 100, seed=2)
    one, two = source.rows(), source.rows()
    interleaved = [(next(one), next(two)) for _ in range(100)]
    assert all(a == b for a, b in interleaved)
    assert [a for a, _ in interleaved] == list(source.rows())


def test_a_pickled_source_makes_the_same_rows(tmp_path: Path) -> None:
    import pickle

    people = tmp_path / "people.txt"
    people.write_text("A.\nB.\nC.\n", encoding="utf-8")
    source = sampler({**MIXED, "who": {"type": "persona", "file": str(people)}}, 50, constraints=["n > 10"])
    rows = list(source.rows())
    assert list(pickle.loads(pickle.dumps(source)).rows()) == rows


# -- refusals -----------------------------------------------------------------------------------


def test_an_unknown_or_missing_column_type_names_the_column_and_the_types() -> None:
    message = refusal({"age": {"type": "number", "min": 1, "max": 2}})
    assert message == (
        "sampler column 'age': unknown type 'number'; the column types are "
        "category, subcategory, integer, float, choice, date, persona."
    )
    assert "sampler column 'age': no type; give one of category" in refusal({"age": {"min": 1}})


def test_weights_of_the_wrong_length_negative_or_all_zero() -> None:
    wrong = refusal({"c": {"type": "category", "values": ["a", "b", "c"], "weights": [1, 2]}})
    assert wrong == (
        "sampler column 'c' (category): weights has 2 numbers for 3 values; give one weight per value, "
        "in the same order, or leave weights out for equal chances."
    )
    negative = refusal({"c": {"type": "category", "values": ["a", "b"], "weights": [1, -0.5]}})
    assert "sampler column 'c' (category): weights[1] is -0.5 (for the value 'b')" in negative and ">= 0" in negative
    assert "all 0" in refusal({"c": {"type": "category", "values": ["a"], "weights": [0]}})
    nested = refusal(
        {
            "f": {"type": "category", "values": ["x"]},
            "s": {"type": "subcategory", "parent": "f", "values": {"x": {"values": ["p", "q"], "weights": [1]}}},
        }
    )
    assert "sampler column 's' (subcategory): values.x" in nested and "weights has 1 number for 2 values" in nested


def test_min_above_max_for_integers_floats_and_dates() -> None:
    assert refusal({"n": {"type": "integer", "min": 5, "max": 1}}) == (
        "sampler column 'n' (integer): min 5 is above max 1; give min <= max (both are included)."
    )
    assert "sampler column 'x' (float): min 2.0 is above max 1.0" in refusal(
        {"x": {"type": "float", "min": 2, "max": 1}}
    )
    late = refusal({"d": {"type": "date", "start": "2024-05-01", "end": "2024-04-01"}})
    assert "sampler column 'd' (date): start 2024-05-01 is after end 2024-04-01" in late


def test_a_missing_setting_or_an_unknown_one_is_named() -> None:
    assert refusal({"n": {"type": "integer", "min": 5}}) == "sampler column 'n' (integer): max is required."
    extra = refusal({"n": {"type": "integer", "min": 1, "max": 2, "step": 1}})
    assert "sampler column 'n' (integer): step is not a setting of integer columns; their settings are" in extra
    assert "min, max" in extra
    with pytest.raises(SamplerError, match="num_rows is required"):
        SamplerSource(columns={"n": {"type": "integer", "min": 1, "max": 2}})
    with pytest.raises(SamplerError, match="num_rows: Input should be greater than 0"):
        SamplerSource(columns={"n": {"type": "integer", "min": 1, "max": 2}}, num_rows=0)


def test_a_subcategory_whose_parent_is_missing_or_its_own_or_a_cycle() -> None:
    missing = refusal({"s": {"type": "subcategory", "parent": "field", "values": {"x": ["y"]}}})
    assert (
        missing == "sampler: column 's' (subcategory) has the parent 'field', which is not a column; the columns are s."
    )
    own = refusal({"s": {"type": "subcategory", "parent": "s", "values": {"x": ["y"]}}})
    assert "is its own parent" in own
    cycle = refusal(
        {
            "a": {"type": "subcategory", "parent": "b", "values": {"x": ["y"]}},
            "b": {"type": "subcategory", "parent": "c", "values": {"x": ["y"]}},
            "c": {"type": "subcategory", "parent": "a", "values": {"y": ["x"]}},
        }
    )
    assert "the columns a -> b -> c -> a are each other's parents, a cycle" in cycle


def test_a_parent_value_without_an_entry_or_an_entry_for_no_parent_value() -> None:
    parent = {"type": "category", "values": ["science", "history", "art"]}
    gap = refusal({"f": parent, "s": {"type": "subcategory", "parent": "f", "values": {"science": ["x"]}}})
    assert "sampler column 's' (subcategory): no entry in values for 'history', 'art'" in gap
    typo = refusal(
        {"f": parent, "s": {"type": "subcategory", "parent": "f", "values": {"science": ["x"], "histroy": ["y"]}}}
    )
    assert "no entry in values for 'history', 'art'" in typo  # the gap is reported first
    extra = refusal(
        {
            "f": {"type": "category", "values": ["a"]},
            "s": {"type": "subcategory", "parent": "f", "values": {"a": ["x"], "b": ["y"]}},
        }
    )
    assert "values has 'b', which the column 'f' never takes (its values: 'a')" in extra


def test_a_parent_whose_values_cannot_be_listed() -> None:
    message = refusal(
        {
            "x": {"type": "float", "min": 0, "max": 1},
            "s": {"type": "subcategory", "parent": "x", "values": {"0": ["a"]}},
        }
    )
    assert "its parent 'x' is a float column, whose values cannot be listed" in message


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    absent = tmp_path / "absent.txt"
    assert refusal({"c": {"type": "choice", "file": str(absent)}}) == (
        f"sampler column 'c': the file {absent} does not exist (relative paths start where the command runs)."
    )
    assert "is a folder" in refusal({"c": {"type": "persona", "file": str(tmp_path)}})
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    assert "is not UTF-8 text" in refusal({"c": {"type": "choice", "file": str(binary)}})
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n", encoding="utf-8")
    assert "holds no values" in refusal({"c": {"type": "choice", "file": str(empty)}})
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"name": "a"}\n{"name": \n', encoding="utf-8")
    assert "line 2: not valid JSON" in refusal({"c": {"type": "choice", "file": str(broken), "field": "name"}})
    assert "line 1: no field 'city'" in refusal({"c": {"type": "choice", "file": str(broken), "field": "city"}})
    table = tmp_path / "t.csv"
    table.write_text("name\na\n", encoding="utf-8")
    assert "is a table: say which of its fields" in refusal({"c": {"type": "choice", "file": str(table)}})
    assert "no column 'city' in its header ['name']" in refusal(
        {"c": {"type": "choice", "file": str(table), "field": "city"}}
    )


def test_a_choice_needs_exactly_one_of_values_and_file() -> None:
    assert "exactly one of values" in refusal({"c": {"type": "choice"}})
    assert "not both" in refusal({"c": {"type": "choice", "values": ["a"], "file": "x.txt"}})


def test_building_reads_no_file_but_checking_does(tmp_path: Path) -> None:
    source = sampler({"c": {"type": "choice", "file": str(tmp_path / "later.txt")}})  # not there yet: fine
    (tmp_path / "later.txt").write_text("now\n", encoding="utf-8")
    assert source.first_row() == {"c": "now"}


# -- registry, dumps, pipeline files, the CLI ---------------------------------------------------


def test_a_dump_loads_back_into_the_same_source_with_the_same_rows() -> None:
    columns = {
        **MIXED,
        "level": {"type": "integer", "min": 1, "max": 2},
        "kind": {"type": "subcategory", "parent": "level", "values": {1: ["a"], 2: ["b"]}},
    }
    source = sampler(columns, 100, seed=4, constraints=["n > 5"])
    dumped = json.loads(json.dumps(source.dump()))  # as a file would hold it: integer keys become strings
    assert dumped["type"] == "sampler"
    again = get_source(dumped.pop("type"), **dumped)
    assert list(again.rows()) == list(source.rows())


SAMPLER_PIPELINE = """
name: sampled
source:
  type: sampler
  num_rows: 20
  seed: 3
  columns:
    field: {type: category, values: [science, history], weights: [1, 1]}
    topic: {type: subcategory, parent: field, values: {science: [stars], history: [Rome]}}
    age: {type: integer, min: 10, max: 20}
    persona: {type: persona}
  constraints: ["age != 15"]
steps:
  - name: ask
    type: text-generation
    template: "As {{ persona }} ask about {{ topic }} ({{ field }}) for a {{ age }}-year-old."
"""


def test_a_pipeline_file_with_a_sampler_source(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(SAMPLER_PIPELINE), encoding="utf-8")
    config = load_pipeline(path)
    source = config.pipeline.source
    assert isinstance(source, SamplerSource) and source.count() == 20
    config.pipeline.validate(config.parameters)  # the template's columns are all sampled
    rows = list(source.rows())
    assert all(
        row["age"] != 15 and row["topic"] == {"science": "stars", "history": "Rome"}[row["field"]] for row in rows
    )
    step = config.pipeline.graph.steps["ask"]
    prompt = step.format_input(rows[0])[-1]["content"]  # type: ignore[attr-defined]
    assert (
        prompt
        == f"As {rows[0]['persona']} ask about {rows[0]['topic']} ({rows[0]['field']}) for a {rows[0]['age']}-year-old."
    )


def test_validate_shows_the_first_sampled_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(SAMPLER_PIPELINE), encoding="utf-8")
    assert cli.main(["validate", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{path}: ok.") and "sampler of 20 rows (field, topic, age, persona), seed 3" in lines[0]
    assert lines[1] == "first 3 source rows:"
    expected = list(load_pipeline(path).pipeline.source.rows_between(0, 3))  # type: ignore[union-attr]
    for index, line in enumerate(lines[2:5]):
        assert line.startswith(f"  {index}: ")
        shown = json.loads(line.split(": ", 1)[1])
        assert {key: value for key, value in shown.items() if key != "persona"} == {
            key: value for key, value in expected[index].items() if key != "persona"
        }
        persona = expected[index]["persona"]
        assert shown["persona"] == (persona if len(persona) <= 80 else persona[:77] + "...")
    assert len(lines) == 5
    assert cli.main(["validate", str(path), "--rows", "0"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_validate_of_a_bad_sampler_fails_before_any_llm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(SAMPLER_PIPELINE).replace('["age != 15"]', '["age > 99"]'), encoding="utf-8")
    assert cli.main(["validate", str(path)]) == 2
    assert "the constraint 'age > 99' (reads age) held in none of 1,000 draws" in capsys.readouterr().err


def test_the_example_pipeline_validates(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parents[3] / "examples" / "sampler.yaml"
    assert cli.main(["validate", str(example), "--rows", "2"]) == 0
    out = capsys.readouterr().out
    assert "ok." in out and "first 2 source rows:" in out
