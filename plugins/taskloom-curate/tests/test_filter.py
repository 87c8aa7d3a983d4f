"""The ``filter`` step: its expression language, what it keeps and drops, and why, in a pipeline too."""

from __future__ import annotations

import json
import timeit
from pathlib import Path

import pytest
from pydantic import ValidationError
from taskloom_curate.expressions import ExpressionError, RowExpression
from taskloom_curate.filtering import Filter, FilterColumnError

from taskloom import Pipeline, get_step
from taskloom.pipeline.config import PipelineConfigError, load_pipeline

ROWS = [
    {"id": 0, "rating": 5, "orders_agree": True, "generations": ["a", "bb"]},
    {"id": 1, "rating": 2, "orders_agree": True, "generations": ["a"]},
    {"id": 2, "rating": None, "orders_agree": True, "generations": []},
    {"id": 3, "orders_agree": False, "generations": ["c"]},
    {"id": 4, "rating": 4, "orders_agree": False, "generations": ["d", "e"]},
]


def kept(expression: str, rows: list[dict] = ROWS) -> list[int]:  # type: ignore[type-arg]
    step = Filter(expression=expression)
    step.load()
    return [row["id"] for row in next(step.process([dict(r) for r in rows]))]


def test_keeps_the_rows_for_which_the_expression_holds_and_counts_each_reason() -> None:
    step = Filter(expression="rating >= 4 and orders_agree")
    step.load()
    assert [r["id"] for r in next(step.process(ROWS))] == [0]
    assert step.dropped() == {
        "rating >= 4 and orders_agree is false": 2,
        "rating is None": 1,
        "rating is missing": 1,
    }


@pytest.mark.parametrize(
    ("expression", "ids"),
    [
        ("rating > 1 and rating < 5", [1, 4]),
        ("1 < rating < 5", [1, 4]),
        ("not orders_agree", [3, 4]),  # id 3 lacks rating, which this expression does not read
        ("generations | length >= 2", [0, 4]),
        ("generations[0] == 'a'", [0, 1]),
        ("rating in [2, 4]", [1, 4]),
        ("rating is divisibleby 2", [1, 4]),
        ("(rating * 2 - 1) // 3 == 3", [0]),
        ("'a' ~ rating == 'a5'", [0]),
        ("rating if orders_agree else 0", [0, 1]),
    ],
)
def test_the_expression_language(expression: str, ids: list[int]) -> None:
    assert kept(expression) == ids


@pytest.mark.parametrize(
    ("expression", "needle"),
    [
        ("rating.__class__", "attribute access"),
        ("rating.real", "attribute access"),
        ("generations.pop()", "a call"),
        ("len(generations)", "a call"),
        ("generations | attr('x')", "the filter 'attr'"),
        ("rating | map('x')", "the filter 'map'"),
        ("rating is callable", "the test 'callable'"),
        ("rating >", "does not parse"),
        ("rating >= 4 )", "does not parse"),
    ],
)
def test_refused_expressions_say_why(expression: str, needle: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        RowExpression(expression)
    assert needle in str(caught.value) and repr(expression) in str(caught.value)
    with pytest.raises(ValidationError, match="expression"):
        Filter(expression=expression)


def test_a_row_where_the_expression_fails_is_dropped_with_the_error() -> None:
    step = Filter(expression="rating > 3")
    step.load()
    assert next(step.process([{"rating": "five"}, {"rating": 4}])) == [{"rating": 4}]
    [(reason, count)] = step.dropped().items()
    assert "TypeError" in reason and count == 1


def test_dropped_rows_go_to_the_side_file_with_their_reason(tmp_path: Path) -> None:
    side = tmp_path / "dropped.jsonl"
    step = Filter(expression="rating >= 4", dropped_to=str(side))
    step.load()
    next(step.process(ROWS))
    step.unload()
    records = [json.loads(line) for line in side.read_text().splitlines()]
    assert [(r["row"]["id"], r["reason"]) for r in records] == [
        (1, "rating >= 4 is false"),
        (2, "rating is None"),
        (3, "rating is missing"),
    ]
    step.load()  # a rerun writes the side file anew
    step.unload()
    assert side.read_text() == ""


def test_in_a_pipeline_the_drops_are_in_the_stats_and_the_summary(tmp_path: Path) -> None:
    from taskloom.pipeline.progress import summary_table

    step = get_step("filter", name="good", expression="rating >= 4")
    result = Pipeline(step, source=ROWS).run(output=tmp_path / "out", progress=None)
    assert [row["id"] for row in result.rows()] == [0, 4]
    dropped = result.stats.steps["good"].dropped
    assert dropped == {"rating >= 4 is false": 1, "rating is None": 1, "rating is missing": 1}
    assert "good dropped 3 rows" in summary_table(result.stats)
    record = json.loads((tmp_path / "out" / "run.json").read_text())["runs"][-1]
    assert record["steps"]["good"]["rows_dropped"] == dropped


def test_an_unknown_column_is_an_error_before_anything_runs_naming_step_expression_and_columns() -> None:
    step = get_step("filter", name="good", expression="score >= 4 and orders_agree")
    with pytest.raises(FilterColumnError) as caught:
        Pipeline(step, source=ROWS).validate()
    message = str(caught.value)
    assert "'good'" in message and "score >= 4 and orders_agree" in message and "'score'" in message
    assert "rating" in message  # the columns that are there


def test_from_a_pipeline_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    rows = "".join(json.dumps(r) + "\n" for r in ROWS)
    (tmp_path / "rows.jsonl").write_text(rows)
    path.write_text("source: rows.jsonl\nsteps:\n  - {name: good, type: filter, expression: 'rating >= 4'}\n")
    config = load_pipeline(path)
    result = config.pipeline.run(output=tmp_path / "out", progress=None)
    assert [row["id"] for row in result.rows()] == [0, 4]
    path.write_text("source: rows.jsonl\nsteps:\n  - {name: bad, type: filter, expression: 'rating.x'}\n")
    with pytest.raises(PipelineConfigError, match="attribute access") as caught:
        load_pipeline(path)
    assert "bad" in str(caught.value)


def test_an_expression_is_cheap() -> None:
    """Structural: it is a few closure calls, not a template render (speed itself: bench/)."""
    expression = RowExpression("rating >= 4 and orders_agree")
    row = {"rating": 5, "orders_agree": True}
    assert timeit.timeit(lambda: expression(row), number=1000) < 1.0  # far from a hang, never a timing target


def _labels(tmp_path: Path, judge: list[str], human: list[str]) -> Path:
    path = tmp_path / "labelled.jsonl"
    path.write_text("".join(json.dumps({"verdict": j, "human": h}) + "\n" for j, h in zip(judge, human, strict=True)))
    return path


def test_a_filter_gated_on_agreement_runs_when_the_judge_agrees(tmp_path: Path) -> None:
    pytest.importorskip("scipy")
    labels = _labels(tmp_path, list("AABBABAB"), list("AABBABAB"))
    gate = {"labels": str(labels), "judge": "verdict", "human": "human", "at_least": 0.6}
    step = get_step("filter", name="good", expression="rating >= 4", agreement=gate)
    result = Pipeline(step, source=ROWS).run(output=tmp_path / "out", progress=None)
    assert [row["id"] for row in result.rows()] == [0, 4]


def test_a_filter_gated_on_agreement_refuses_a_judge_that_disagrees(tmp_path: Path) -> None:
    pytest.importorskip("scipy")
    from taskloom_curate.filtering import AgreementTooLowError

    labels = _labels(tmp_path, list("AAAAABBB"), list("ABABABAB"))
    gate = {"labels": str(labels), "judge": "verdict", "human": "human", "at_least": 0.6}
    step = get_step("filter", name="good", expression="rating >= 4", agreement=gate)
    with pytest.raises(AgreementTooLowError) as caught:
        Pipeline(step, source=ROWS).run(output=tmp_path / "out", progress=None)
    message = str(caught.value)
    assert "'good'" in message and "cohen_kappa" in message and "at_least=0.6" in message and "95% CI" in message
    assert not (tmp_path / "out" / "good.jsonl").exists() or not (tmp_path / "out" / "good.jsonl").read_text()
