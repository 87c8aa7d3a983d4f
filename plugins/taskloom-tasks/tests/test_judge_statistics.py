"""Judge statistics of the pack's judges, from the rows they write, in a pipeline run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskloom import Pipeline, get_task
from taskloom.errors import JudgeUnreadableError
from taskloom.pipeline.progress import summary_table
from taskloom.testing.scripted import ScriptedLLM

ROWS = [
    {"instruction": f"Question {i}?", "generations": ["short", "a much longer answer than the other one"]}
    for i in range(6)
]


def run(task_name: str, replies: list[str | None], tmp_path: Path, **fields: object) -> object:
    task = get_task(task_name, name="judge", llm=ScriptedLLM(replies=replies), **fields)
    return Pipeline(task, source=ROWS).run(output=tmp_path / "out", progress=None)


def test_ultrafeedback_scores_unreadable_and_refused(tmp_path: Path) -> None:
    replies = ["Rating: 4\nRating: 2", "Rating: 5\nRating: 3", "no ratings here at all", None, "[1, 5]", "[2, 4]"]
    result = run("ultrafeedback", replies, tmp_path)
    stats = result.stats.steps["judge"]  # type: ignore[attr-defined]
    summary = stats.judge.summary()
    assert summary["unreadable"] == 1 and summary["refused"] == 1
    assert summary["judged"] == 8  # four rows, two answers each
    assert summary["distribution"] == {"1": 1, "2": 2, "3": 1, "4": 2, "5": 2}
    assert summary["score_length_spearman"] is not None
    # [4, 2], [5, 3], [1, 5], [2, 4]: the first answer is scored highest in half the rows
    assert summary["rows_with_differing_scores"] == 4 and summary["first_scored_highest_rate"] == 0.5
    line = summary_table(result.stats)  # type: ignore[attr-defined]
    assert "judge (judge)" in line and "unreadable" in line
    record = json.loads((tmp_path / "out" / "run.json").read_text())["runs"][-1]
    assert record["steps"]["judge"]["judge"]["unreadable"] == 1


def test_pairwise_in_both_orders_flips_ties_and_length(tmp_path: Path) -> None:
    # Each row is asked twice (A/B then B/A). The judge always picks whichever it read first:
    # the orders disagree on every row, which is what a position-biased judge looks like.
    first = '{"rationale": "first", "verdict": "A"}'
    result = run("pairwise-judge", [first] * 12, tmp_path, both_orders=True)
    summary = result.stats.steps["judge"].judge.summary()  # type: ignore[attr-defined]
    assert summary["judged"] == 6
    assert summary["order_flip_rate"] == 1.0
    assert summary["distribution"] == {"tie": 6}  # what the rows say: no preference survives both orders
    assert summary["tie_rate"] == 0.0  # but the judge itself never called a tie: those are flips


def test_a_tie_the_judge_gives_in_both_orders_is_a_tie_not_a_flip(tmp_path: Path) -> None:
    tie = '{"rationale": "same", "verdict": "tie"}'
    first = '{"rationale": "first", "verdict": "A"}'
    # row 1: tie both ways (a tie); row 2: A then A, i.e. first then second (a flip)
    task = get_task("pairwise-judge", name="judge", llm=ScriptedLLM(replies=[tie, tie, first, first]), both_orders=True)
    result = Pipeline(task, source=ROWS[:2]).run(output=tmp_path / "out", progress=None)
    summary = result.stats.steps["judge"].judge.summary()  # type: ignore[attr-defined]
    assert summary["tie_rate"] == 0.5 and summary["order_flip_rate"] == 0.5


def test_the_longer_answer_win_rate(tmp_path: Path) -> None:
    longer = '{"rationale": "B says more", "verdict": "B"}'
    shorter = '{"rationale": "A is brief", "verdict": "A"}'
    result = run("pairwise-judge", [longer, longer, longer, shorter, longer, longer], tmp_path)
    summary = result.stats.steps["judge"].judge.summary()  # type: ignore[attr-defined]
    assert summary["longer_answer_win_rate"] == pytest.approx(5 / 6, abs=1e-3)
    assert summary["order_flip_rate"] is None  # asked in one order only


def test_max_unreadable_stops_the_run_naming_the_judge_with_three_replies(tmp_path: Path) -> None:
    rows = [{"instruction": f"Q{i}?", "generations": ["a", "b"]} for i in range(60)]
    replies = ["I cannot decide.", '{"rationale": "x", "verdict": "A"}']  # half unreadable
    task = get_task("pairwise-judge", name="weak", llm=ScriptedLLM(replies=replies * 30), max_unreadable=0.2)
    with pytest.raises(JudgeUnreadableError) as caught:
        Pipeline(task, source=rows).run(output=tmp_path / "out", progress=None)
    message = str(caught.value)
    assert "'weak'" in message and "max_unreadable=0.2" in message
    assert message.count("I cannot decide.") == 3
    result = caught.value.result
    assert 20 <= result.stats.done < 60  # type: ignore[attr-defined]


def test_a_task_that_judges_nothing_has_no_statistics(tmp_path: Path) -> None:
    task = get_task("text-generation", name="answer", llm=ScriptedLLM(replies=["x"]))
    result = Pipeline(task, source=[{"instruction": "hi"}]).run(output=tmp_path / "out", progress=None)
    assert result.stats.steps["answer"].judge is None


def test_grouped_generations_of_a_judge_are_counted_one_by_one(tmp_path: Path) -> None:
    replies = ["[4, 2]", "not readable"] * 6
    result = run("ultrafeedback", replies, tmp_path, num_generations=2, group_generations=True)
    summary = result.stats.steps["judge"].judge.summary()  # type: ignore[attr-defined]
    assert summary["judged"] == 12 and summary["unreadable"] == 6  # 6 rows x 2 generations
