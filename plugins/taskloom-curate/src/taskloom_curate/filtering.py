"""The ``filter`` step: keep the rows for which an expression over their columns holds.

    - name: keep-good
      type: filter
      expression: rating >= 4 and orders_agree
      dropped_to: out/dropped.jsonl        # optional: every row left out, with why

The expression is Jinja2's expression syntax, compiled by :mod:`taskloom_curate.expressions`
into closures from an allowlist (no attribute access, no calls, never ``eval``). A row whose
column is missing, or None (a judge that could not be read), is left out with that reason
rather than judged by a comparison with None; so a filter never keeps a row because a judge
failed. Every left-out row is counted by reason in the run's stats and summary.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from taskloom.plugin import Row, Step, StepColumns, TaskloomError
from taskloom_curate.sidefile import SideFile
from taskloom_curate.upstream import UpstreamColumnError, absent, columns_from_upstream

if TYPE_CHECKING:  # jinja2 is imported when a filter is built, not when the plugin registers
    from taskloom_curate.expressions import RowExpression


class AgreementGate(BaseModel):
    """Filter only by a judge that agrees with people: measured on labelled rows before the run."""

    model_config = ConfigDict(extra="forbid")

    labels: str = Field(description="A run folder or JSONL file whose rows hold both the judge's and a human column.")
    judge: str = Field(description="The judge's column there (a verdict or a score).")
    human: str = Field(description="The human labels' column there.")
    metric: Literal["accuracy", "cohen_kappa", "spearman", "kendall"] | None = Field(
        default=None, description="What to measure; None: Cohen's kappa for labels, Spearman for scores."
    )
    at_least: float = Field(ge=-1, le=1, description="The least agreement this filter accepts.")


class AgreementTooLowError(TaskloomError, ValueError):
    """A filter gated on a judge's agreement with people, and the judge agrees less than required."""


class FilterColumnError(UpstreamColumnError):
    """A filter expression names a column that no step before it makes."""


class Filter(Step):
    """Keep the rows for which ``expression`` holds; the others are dropped, counted by reason.

    In ``{"rating": 5, "orders_agree": True}`` and ``{"rating": 2, "orders_agree": True}`` with
    ``expression: rating >= 4 and orders_agree``; out: the first row only (the second is counted
    as ``rating >= 4 and orders_agree is false``). ``{"rating": None}`` is counted as
    ``rating is None``.
    """

    registry_name = "filter"
    runs_in_thread: ClassVar[bool] = False  # a few closures a row: cheaper than a thread hop
    example: ClassVar[tuple[Row, Row]] = (
        {"instruction": "Name a river.", "rating": 5, "orders_agree": True},
        {"instruction": "Name a river.", "rating": 5, "orders_agree": True},
    )

    expression: str = Field(
        min_length=1,
        description="A Jinja2 expression over the row's columns, such as 'rating >= 4 and orders_agree'.",
    )
    dropped_to: str | None = Field(
        default=None, description="A JSON Lines file for every dropped row and its reason (relative to the run)."
    )
    agreement: AgreementGate | None = Field(
        default=None,
        description="Refuse to run unless the judge agrees with human labels at least this much (taskloom[stats]).",
    )

    _compiled: RowExpression | None = PrivateAttr(default=None)
    _side: SideFile | None = PrivateAttr(default=None)

    @field_validator("expression")
    @classmethod
    def _parses(cls, value: str) -> str:
        from taskloom_curate.expressions import RowExpression

        RowExpression(value)  # a syntax error or a refused construct fails here, with the reason
        return value

    @property
    def compiled(self) -> RowExpression:
        from taskloom_curate.expressions import RowExpression

        if self._compiled is None or self._compiled.source != self.expression:
            self._compiled = RowExpression(self.expression)
        return self._compiled

    @property
    def inputs(self) -> StepColumns:
        # Optional: a row without one is dropped with that reason; a pipeline whose steps never
        # make one is refused by columns_after, with the expression in the message.
        return dict.fromkeys(self.compiled.columns, False)

    def columns_after(self, available: Sequence[str]) -> list[str]:
        what = f"the expression {self.expression!r} reads"
        return columns_from_upstream(self.name, what, self.compiled.columns, available, FilterColumnError)

    def load(self) -> None:
        if self.agreement is not None:
            self._check_agreement(self.agreement)
        self._dropped.clear()
        if self.dropped_to:
            self._side = SideFile(self.dropped_to)
            self._side.open()

    def _check_agreement(self, gate: AgreementGate) -> None:
        from taskloom.plugin import agreement_in_run

        measured = agreement_in_run(gate.labels, gate.judge, gate.human)
        metric = gate.metric or ("cohen_kappa" if measured["kind"] == "labels" else "spearman")
        if metric not in measured:
            raise AgreementTooLowError(
                f"Step {self.name!r}: {metric} does not apply to {measured['kind']}; use one of "
                f"{', '.join(k for k in ('accuracy', 'cohen_kappa', 'spearman', 'kendall') if k in measured)}."
            )
        value, (low, high) = measured[metric]["value"], measured[metric]["ci95"]
        if value < gate.at_least:
            raise AgreementTooLowError(
                f"Step {self.name!r} filters by a judge that agrees with people too little to be trusted: "
                f"{metric} of {gate.judge!r} against {gate.human!r} is {value:.3f} (95% CI {low:.3f} to {high:.3f}, "
                f"{measured['rows']} labelled rows in {gate.labels}), below at_least={gate.at_least:g}. Improve the "
                "judge (a larger model, a clearer template, both orders) or label more rows."
            )

    def unload(self) -> None:
        if self._side is not None:
            self._side.close()
            self._side = None

    def drop(self, row: Row, reason: str) -> None:
        super().drop(row, reason)
        if self._side is not None:
            self._side.write({"reason": reason, "row": row})

    def process(self, inputs: list[Row]) -> Iterator[list[Row]]:
        expression = self.compiled
        columns = expression.columns
        kept = []
        for row in inputs:
            reason = absent(row, columns)
            if reason is None:
                try:
                    holds = expression(row)
                except Exception as error:  # a type mismatch in one row: that row's reason
                    reason = f"{expression.source!r} failed: {type(error).__name__}: {error}"
                else:
                    if holds:
                        kept.append(row)
                        continue
                    reason = f"{expression.source} is false"
            self.drop(row, reason)
        yield kept


__all__ = ["AgreementGate", "AgreementTooLowError", "Filter", "FilterColumnError"]
