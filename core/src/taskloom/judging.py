"""Judge statistics: how far a judging step's verdicts can be trusted, measured on its own rows.

A dataset filtered by a judge is only as good as the judge, and the judges that matter fail in
known ways: replies that cannot be read, refusals, scores bunched on one value, a preference for
whichever answer is read first, a preference for the longer answer. So every judging task hands
the pipeline a collector (:meth:`taskloom.tasks.Task.judge_statistics`), which sees each row
the step writes and summarises as plain data for ``result.stats``, the summary and the dataset
card. A third-party judge gets the same treatment by returning one of these collectors (or its
own :class:`JudgeStatistics`) from that method.

A judged item is one score or verdict about one answer (a row of a pairwise judge, or each of
the ratings an UltraFeedback row gives its answers). It is *unreadable* when the judge replied
with text that could not be parsed, *refused* when the judge gave no text at all, and *failed*
when the request itself failed (those are counted apart: they say nothing about the judge).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from taskloom.tasks.base import METADATA
from taskloom.typing import Row

EXAMPLES = 3
"""Unreadable replies kept to show (a run stopped by ``max_unreadable`` prints them)."""


class JudgeStatistics:
    """Counts common to every judge; subclasses read their own columns in :meth:`judge`."""

    def __init__(self, task_name: str) -> None:
        self.task_name = task_name
        self.judged = 0
        self.unreadable = 0
        self.refused = 0
        self.failed = 0
        self.unreadable_examples: list[str] = []

    def add(self, row: Row) -> None:
        """One row the judging step wrote."""
        meta = row.get(METADATA) or {}
        if meta.get(f"error_{self.task_name}"):
            self.failed += 1
            return
        self.judge(row, meta)

    def judge(self, row: Row, meta: dict[str, Any]) -> None:
        raise NotImplementedError

    def merge(self, other: JudgeStatistics) -> None:
        """Count what ``other`` saw as seen here too: the same judge over another part of the rows.

        Counters and counts add up and collected items join (examples up to their bound), so the
        statistics of a run cut into shards are those of the whole run. A subclass whose state is
        not counts, counters and lists overrides it.
        """
        for name, value in vars(other).items():
            mine = getattr(self, name, None)
            if isinstance(value, bool | str) or value is None:
                continue
            if isinstance(value, Counter):
                mine.update(value)  # type: ignore[union-attr]
            elif isinstance(value, int | float):
                setattr(self, name, (mine or 0) + value)
            elif isinstance(value, list):
                room = EXAMPLES - len(mine) if name == "unreadable_examples" else len(value)  # type: ignore[arg-type]
                mine.extend(value[: max(0, room)])  # type: ignore[union-attr]

    def _unreadable(self, meta: dict[str, Any]) -> None:
        raw = meta.get(f"raw_output_{self.task_name}")
        if raw is None:
            self.refused += 1
            return
        self.unreadable += 1
        if len(self.unreadable_examples) < EXAMPLES:
            self.unreadable_examples.append(str(raw)[:500])

    @property
    def seen(self) -> int:
        """Items the judge answered or refused (failed requests left out)."""
        return self.judged + self.unreadable + self.refused

    @property
    def unreadable_rate(self) -> float:
        return self.unreadable / self.seen if self.seen else 0.0

    def summary(self) -> dict[str, Any]:
        seen = self.seen
        return {
            "items": seen,
            "judged": self.judged,
            "unreadable": self.unreadable,
            "unreadable_rate": _rate(self.unreadable, seen),
            "refused": self.refused,
            "refused_rate": _rate(self.refused, seen),
            "failed_requests": self.failed,
        }

    def line(self) -> str:
        """The summary in one line for the end-of-run table."""
        data = self.summary()
        return (
            f"{data['items']} judged items, {_percent(data['unreadable_rate'])} unreadable, "
            f"{_percent(data['refused_rate'])} refused"
        )


class ScoreStatistics(JudgeStatistics):
    """A judge that scores answers: the score distribution and how scores follow answer length.

    ``scores`` names the column of scores; ``answers`` the column of the answers they judge. Both
    may hold a list (one score per answer, as UltraFeedback rates a row's answers together).
    """

    def __init__(self, task_name: str, scores: str, answers: str) -> None:
        super().__init__(task_name)
        self.scores_column = scores
        self.answers_column = answers
        self.distribution: Counter[Any] = Counter()
        self._pairs: list[tuple[float, int]] = []
        self.differing = 0
        """Rows scoring several answers whose scores are not all equal."""
        self.first_highest = 0
        """Of those, rows whose first answer alone got the highest score: a position bias shows here."""

    def judge(self, row: Row, meta: dict[str, Any]) -> None:
        scores, answers = row.get(self.scores_column), row.get(self.answers_column)
        if isinstance(scores, list):
            self._position(scores)
        else:
            scores, answers = [scores], [answers]
        if not isinstance(answers, list):
            answers = [answers] * len(scores)
        if all(score is None for score in scores):  # nothing could be read from the reply
            self._unreadable(meta)
            return
        for index, score in enumerate(scores):
            if score is None:
                self.unreadable += 1
                continue
            self.judged += 1
            self.distribution[score] += 1
            answer = answers[index] if index < len(answers) else None
            if isinstance(score, int | float) and isinstance(answer, str):
                self._pairs.append((float(score), len(answer.split())))

    def _position(self, scores: list[Any]) -> None:
        numbers = [s for s in scores if isinstance(s, int | float) and not isinstance(s, bool)]
        if len(numbers) < 2 or len(numbers) != len(scores) or len(set(numbers)) == 1:
            return
        self.differing += 1
        self.first_highest += numbers[0] > max(numbers[1:])

    def summary(self) -> dict[str, Any]:
        data = super().summary()
        numbers = [s for s in self.distribution.elements() if isinstance(s, int | float)]
        data["distribution"] = {str(k): v for k, v in sorted(self.distribution.items(), key=lambda kv: str(kv[0]))}
        data["mean"] = round(sum(numbers) / len(numbers), 4) if numbers else None
        data["score_length_spearman"] = spearman(self._pairs)
        data["rows_with_differing_scores"] = self.differing
        data["first_scored_highest_rate"] = _rate(self.first_highest, self.differing)
        return data

    def line(self) -> str:
        data = self.summary()
        shown = " ".join(f"{score}:{count}" for score, count in data["distribution"].items()) or "-"
        correlation = data["score_length_spearman"]
        tail = f", score-length Spearman {correlation:+.2f}" if correlation is not None else ""
        if self.differing:
            tail += (
                f", first answer scored highest in {_percent(data['first_scored_highest_rate'])} of "
                f"{self.differing} rows with differing scores"
            )
        return f"{super().line()}; scores {shown}{tail}"


class VerdictStatistics(JudgeStatistics):
    """A judge that picks between two answers: verdicts, ties, order flips, the longer answer's wins."""

    def __init__(self, task_name: str, verdict: str, answers: str, orders_agree: str | None = None) -> None:
        super().__init__(task_name)
        self.verdict_column = verdict
        self.answers_column = answers
        self.agree_column = orders_agree
        self.distribution: Counter[str] = Counter()
        self.ties = 0
        """Ties the judge gave itself; a tie written because the two orders disagreed is a flip, not one."""
        self.both_orders = 0
        self.flipped = 0
        self.decided_by_length = 0
        self.longer_won = 0

    def judge(self, row: Row, meta: dict[str, Any]) -> None:
        verdict = row.get(self.verdict_column)
        if verdict is None:
            self._unreadable(meta)
            return
        self.judged += 1
        self.distribution[str(verdict)] += 1
        agree = row.get(self.agree_column) if self.agree_column else None
        if agree is not None:
            self.both_orders += 1
            self.flipped += not agree
        self.ties += str(verdict) == "tie" and agree is not False
        answers = row.get(self.answers_column)
        if str(verdict) in ("A", "B") and isinstance(answers, list) and len(answers) == 2:
            first, second = (len(str(a or "").split()) for a in answers)
            if first != second:
                self.decided_by_length += 1
                self.longer_won += (str(verdict) == "A") == (first > second)

    def summary(self) -> dict[str, Any]:
        data = super().summary()
        data["distribution"] = dict(sorted(self.distribution.items()))
        data["tie_rate"] = _rate(self.ties, self.judged)
        data["order_flip_rate"] = _rate(self.flipped, self.both_orders) if self.both_orders else None
        data["longer_answer_win_rate"] = _rate(self.longer_won, self.decided_by_length)
        return data

    def line(self) -> str:
        data = self.summary()
        shown = " ".join(f"{verdict}:{count}" for verdict, count in data["distribution"].items()) or "-"
        flips = data["order_flip_rate"]
        flip_text = f", order flips {_percent(flips)}" if flips is not None else ""
        return (
            f"{super().line()}; verdicts {shown}, ties {_percent(data['tie_rate'])}{flip_text}, "
            f"longer answer wins {_percent(data['longer_answer_win_rate'])}"
        )


def ungrouped(row: Row, columns: list[str]) -> list[Row]:
    """The rows of each generation of a grouped row (``group_generations``), for a collector to add.

    A grouped row holds one list entry per generation in each of the task's output columns and in
    its metadata; the other columns (the input) are the same for every generation.
    """
    meta = row.get(METADATA)
    if not isinstance(meta, list):
        return [row]
    grouped = [c for c in [*columns, METADATA] if isinstance(row.get(c), list)]
    return [{**row, **{c: row[c][i] if i < len(row[c]) else None for c in grouped}} for i in range(len(meta))]


def spearman(pairs: list[tuple[float, int]]) -> float | None:
    """Spearman's rank correlation of the pairs (average ranks for ties); None below three or if constant."""
    if len(pairs) < 3:
        return None
    xs = _ranks([p[0] for p in pairs])
    ys = _ranks([float(p[1]) for p in pairs])
    n = len(pairs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    var_x = sum((x - mean_x) ** 2 for x in xs)
    var_y = sum((y - mean_y) ** 2 for y in ys)
    if var_x == 0 or var_y == 0:
        return None
    return round(cov / math.sqrt(var_x * var_y), 4)


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.0f}%"


__all__ = ["JudgeStatistics", "ScoreStatistics", "VerdictStatistics", "spearman", "ungrouped"]
