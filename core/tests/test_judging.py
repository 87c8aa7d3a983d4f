"""The judge-statistics collectors on hand-made rows: the arithmetic, and what counts as what."""

from __future__ import annotations

import pytest

from taskloom.judging import ScoreStatistics, VerdictStatistics, spearman


def test_spearman_matches_known_values() -> None:
    assert spearman([(1, 10), (2, 20), (3, 30)]) == 1.0
    assert spearman([(1, 30), (2, 20), (3, 10)]) == -1.0
    assert spearman([(1, 1), (2, 1), (3, 1)]) is None  # constant lengths
    assert spearman([(1, 1)]) is None
    # ties get average ranks: x ranks [1.5, 1.5, 3], y ranks [1, 2, 3]
    assert spearman([(1, 1), (1, 2), (2, 3)]) == pytest.approx(0.866, abs=1e-3)


def test_failed_requests_are_not_the_judges_fault() -> None:
    stats = ScoreStatistics("j", scores="score", answers="generation")
    stats.add({"score": None, "distilabel_metadata": {"error_j": "ServerError: down"}})
    stats.add({"score": None, "distilabel_metadata": {"raw_output_j": "I'd rather not say"}})
    stats.add({"score": None, "distilabel_metadata": {"raw_output_j": None}})
    stats.add({"score": 3, "generation": "three words here", "distilabel_metadata": {}})
    summary = stats.summary()
    assert (summary["failed_requests"], summary["unreadable"], summary["refused"], summary["judged"]) == (1, 1, 1, 1)
    assert summary["unreadable_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert stats.unreadable_examples == ["I'd rather not say"]


def test_a_verdict_for_the_longer_answer_counts_as_a_length_win() -> None:
    stats = VerdictStatistics("j", verdict="verdict", answers="generations", orders_agree="agree")
    stats.add({"verdict": "B", "generations": ["a", "a b c"], "agree": True})
    stats.add({"verdict": "A", "generations": ["a", "a b c"], "agree": False})
    stats.add({"verdict": "tie", "generations": ["a", "a b c"], "agree": True})
    summary = stats.summary()
    assert summary["longer_answer_win_rate"] == 0.5 and summary["order_flip_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert summary["tie_rate"] == pytest.approx(1 / 3, abs=1e-3)


def test_statistics_of_parts_merged_are_the_statistics_of_the_whole() -> None:
    score_rows = (
        [
            {"score": s, "generation": "word " * (i + 1), "distilabel_metadata": {}}
            for i, s in enumerate([1, 3, 2, 5, 4])
        ]
        + [{"score": None, "distilabel_metadata": {"raw_output_j": f"unreadable {i}"}} for i in range(5)]
        + [{"score": None, "distilabel_metadata": {"error_j": "ServerError: down"}}]
    )
    verdict_rows = [
        {"verdict": v, "generations": ["a", "a b c"], "agree": i % 2 == 0}
        for i, v in enumerate(["A", "B", "tie", "A", "B", "B"])
    ]
    for make, rows in [
        (lambda: ScoreStatistics("j", scores="score", answers="generation"), score_rows),
        (lambda: VerdictStatistics("j", verdict="verdict", answers="generations", orders_agree="agree"), verdict_rows),
    ]:
        whole, first, second = make(), make(), make()
        for i, row in enumerate(rows):
            whole.add(row)
            (first if i % 3 else second).add(row)  # interleaved, as shards of one run never are, to be strict
        first.merge(second)
        assert first.summary() == whole.summary()
    assert len(first.unreadable_examples) <= 3
