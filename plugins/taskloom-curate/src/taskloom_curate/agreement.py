"""The ``agreement`` step: a judge's agreement with people, measured inside the pipeline.

``taskloom agreement RUN_DIR`` measures a finished run; this step measures the rows as they go
by, so the run's summary, ``run.json`` and dataset card carry the number next to the judge
statistics. Only the rows that have a human label count (label a few dozen of a thousand and
leave the rest None); every row passes through unchanged. To *refuse* a judge that agrees too
little, gate the ``filter`` after it on a labelled run (``agreement:`` there), which is decided
before any row is paid for.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from pydantic import Field, PrivateAttr

from taskloom.plugin import Row, Step, StepColumns, TaskloomError, measure_agreement
from taskloom_curate.upstream import UpstreamColumnError, columns_from_upstream

MIN_LABELLED = 3
"""Fewer labelled rows than this measure nothing (the summary says so)."""


class AgreementColumnError(UpstreamColumnError):
    """An agreement step reads a column that no step before it makes."""


class Agreement(Step):
    """Measure how well a judge's column agrees with human labels; every row passes unchanged.

    Verdicts and labels get accuracy and Cohen's kappa, scores Spearman's and Kendall's
    correlations, each with a bootstrap 95% interval, over the rows where both columns have a
    value. In: ``{"verdict": "A", "human": "A"}``, ``{"verdict": "B", "human": None}``; out: the
    same rows, and ``accuracy``/``cohen_kappa`` over the first in the run's stats. Needs numpy
    and scipy (``taskloom[stats]``).
    """

    needs_all_rows: ClassVar[bool] = True  # a measure over every labelled row, not a shard's

    registry_name = "agreement"
    runs_in_thread: ClassVar[bool] = False  # two lookups a row; the measure runs once, at the end
    example: ClassVar[tuple[Row, Row]] = (
        {"instruction": "Capital of Italy?", "verdict": "B", "human": "B"},
        {"instruction": "Capital of Italy?", "verdict": "B", "human": "B"},
    )

    judge: str = Field(min_length=1, description="The judge's column (a verdict, a label or a score).")
    human: str = Field(min_length=1, description="The human labels' column; rows where it is None are not counted.")
    bootstrap: int = Field(default=1000, ge=100, description="Resamples for the confidence intervals.")
    seed: int = Field(default=20241, description="Seed of the resampling, so the same rows give the same interval.")

    _judged: list[Any] = PrivateAttr(default_factory=list)
    _labelled: list[Any] = PrivateAttr(default_factory=list)

    @property
    def inputs(self) -> StepColumns:
        return {self.judge: False, self.human: False}

    def columns_after(self, available: Sequence[str]) -> list[str]:
        return columns_from_upstream(
            self.name, "it compares the columns", [self.judge, self.human], available, AgreementColumnError
        )

    def load(self) -> None:
        try:
            import numpy  # noqa: F401
            import scipy  # noqa: F401
        except ImportError:
            raise TaskloomError(
                f"Step {self.name!r} measures agreement with numpy and scipy: pip install 'taskloom[stats]'."
            ) from None
        self._judged.clear()
        self._labelled.clear()

    def process(self, inputs: list[Row]) -> Iterator[list[Row]]:
        for row in inputs:
            self._judged.append(row.get(self.judge))
            self._labelled.append(row.get(self.human))
        yield inputs

    def measured(self) -> dict[str, Any] | None:
        pairs = sum(1 for j, h in zip(self._judged, self._labelled, strict=True) if j is not None and h is not None)
        if not self._judged:
            return None
        if pairs < MIN_LABELLED:
            return {"labelled_rows": pairs, "not_measured": f"fewer than {MIN_LABELLED} rows with both columns"}
        result = measure_agreement(self._judged, self._labelled, bootstrap=self.bootstrap, seed=self.seed)
        kind, rows, left_out = result.pop("kind"), result.pop("rows"), result.pop("left_out")
        return {**result, "labelled_rows": rows, "unlabelled_rows": left_out, "compared_as": kind}


__all__ = ["Agreement", "AgreementColumnError"]
