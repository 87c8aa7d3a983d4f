"""What a run will cost before it runs: requests, tokens and dollars per step, from a sample.

A sample of source rows goes through every step's own row recipe (the one the run uses), so the
calls each task makes per row (several generations, both orders of a pairwise judge, a plan of
many rounds) are counted as they will be made, and each prompt's tokens are estimated from the
prompt the task really formats. No LLM is called: every call is answered with a stand-in text as
long as ``max_new_tokens`` allows, so a later step's prompt (a judge reading the answer) is as
long as it can be. Output tokens are therefore an upper bound wherever ``max_new_tokens`` is set;
where it is not, the estimate says so and assumes :data:`UNBOUNDED_OUTPUT` tokens per answer.

A step that reads a value parsed from an earlier answer (a rating, a verdict) sees the stand-in
text unparsed; its figures are those of rows without that value.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskloom.llms.async_llm import failed_output
from taskloom.llms.limits import estimate_tokens
from taskloom.pricing import LOCAL, Price, PriceTable, format_dollars
from taskloom.tasks.base import Task
from taskloom.text_table import format_table
from taskloom.typing import GenerateOutput
from taskloom.work import Call

if TYPE_CHECKING:
    from taskloom.llms.base import LLM

UNBOUNDED_OUTPUT = 1024
"""Tokens assumed per answer when an LLM sets no ``max_new_tokens`` (then no bound is known)."""


@dataclass
class StepEstimate:
    """One task step's forecast for the whole run (or per source row when the row count is unknown)."""

    name: str
    model: str
    price: Price | None
    batch: bool
    output_bound: str
    """How output tokens were bounded: ``max_new_tokens=512``, or that no bound was set."""
    sample_requests: int = 0
    sample_input_tokens: int = 0
    sample_output_tokens: int = 0
    one_request_usd: float = 0.0
    """The most one request of the sample can cost (what a budget must at least allow)."""
    scale: float = 1.0

    @property
    def requests(self) -> int:
        return math.ceil(self.sample_requests * self.scale)

    @property
    def input_tokens(self) -> int:
        return math.ceil(self.sample_input_tokens * self.scale)

    @property
    def output_tokens(self) -> int:
        return math.ceil(self.sample_output_tokens * self.scale)

    @property
    def cost_usd(self) -> float | None:
        if self.price is None:
            return None
        return self.price.cost(self.input_tokens, self.output_tokens, batch=self.batch)


@dataclass
class RunEstimate:
    """The forecast of a whole run: one :class:`StepEstimate` per task step."""

    steps: list[StepEstimate]
    sample_rows: int
    total_rows: int | None
    notes: list[str] = field(default_factory=list)

    @property
    def cost_usd(self) -> float | None:
        """Dollars for every priced step (None if no step has a price)."""
        costs = [s.cost_usd for s in self.steps if s.cost_usd is not None]
        return sum(costs) if costs else None

    @property
    def priced(self) -> bool:
        return all(s.price is not None for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sample_rows": self.sample_rows,
            "total_rows": self.total_rows,
            "cost_usd": self.cost_usd,
            "priced": self.priced,
            "steps": [
                {
                    "name": s.name,
                    "model": s.model,
                    "requests": s.requests,
                    "input_tokens": s.input_tokens,
                    "output_tokens": s.output_tokens,
                    "output_bound": s.output_bound,
                    "cost_usd": s.cost_usd,
                    "one_request_usd": s.one_request_usd if s.price is not None else None,
                }
                for s in self.steps
            ],
            "notes": self.notes,
        }

    def table(self) -> str:
        """The forecast as a text table with a line on what it assumed."""
        rows = [
            [
                s.name,
                s.model,
                f"{s.requests:,}",
                f"{s.input_tokens:,}",
                f"≤ {s.output_tokens:,}" if not s.output_bound.startswith("no ") else f"~{s.output_tokens:,}",
                "$0 (local)" if s.price is LOCAL else format_dollars(s.cost_usd),
                s.output_bound,
            ]
            for s in self.steps
        ]
        scope = (
            f"all {self.total_rows:,} rows, scaled from {self.sample_rows}"
            if self.total_rows is not None
            else f"per source row, from {self.sample_rows} (the source does not say how many rows it has)"
        )
        total = self.cost_usd
        if total is None:
            money = "no price for any step"
        else:
            dollars = format_dollars(total)
            money = f"at most {dollars}" if self.priced else f"{dollars} + steps with no price"
        lines = [
            format_table(rows, ["step", "model", "requests", "tokens in", "tokens out", "dollars", "output bound"]),
            f"Estimate for {scope}: {money}. Cached generations (a resume) cost nothing and are not subtracted.",
            *self.notes,
        ]
        return "\n".join(lines)


def stand_in(max_new_tokens: int | None) -> str:
    """An answer as long as ``max_new_tokens`` allows (about four characters a token)."""
    tokens = max_new_tokens or UNBOUNDED_OUTPUT
    return ("lorem " * (tokens * 4 // 6 + 1))[: tokens * 4]


class Forecaster:
    """Answers a task's calls with stand-in texts, counting what the real calls would cost."""

    def __init__(self, task: Task, prices: PriceTable) -> None:
        llm = task.resolve_llm()
        self.llm = llm
        options = llm.options()
        self.max_new_tokens = options.max_new_tokens if llm.accepts("max_new_tokens") else None
        bound = (
            f"max_new_tokens={self.max_new_tokens}"
            if self.max_new_tokens is not None
            else f"no max_new_tokens: {UNBOUNDED_OUTPUT} a generation assumed, not a bound"
        )
        self.step = StepEstimate(task.name, llm.model_name, prices.price_of(llm), llm.in_batch_mode(), bound)
        self.per_request = _choices_per_request(llm)

    def ask(self, calls: list[Call]) -> list[GenerateOutput]:
        outputs: list[GenerateOutput] = []
        for call in calls:
            if call.run is not None:  # not a request, and an estimate runs nothing
                outputs.append(failed_output(call.count, "not run by an estimate"))
                continue
            options = self.llm.options(call.kwargs) if call.kwargs else None
            limit = options.max_new_tokens if options is not None else self.max_new_tokens
            answer = limit or UNBOUNDED_OUTPUT
            requests = math.ceil(call.count / self.per_request)
            prompt = estimate_tokens(call.chat, None)
            step = self.step
            step.sample_requests += requests
            step.sample_input_tokens += prompt * requests
            step.sample_output_tokens += answer * call.count
            if step.price is not None:
                per_request = min(call.count, self.per_request)
                worst = step.price.cost(prompt, answer * per_request, batch=step.batch)
                step.one_request_usd = max(step.one_request_usd, worst)
            text = stand_in(limit)
            outputs.append(
                {
                    "generations": [text] * call.count,
                    "statistics": {"input_tokens": [prompt] * call.count, "output_tokens": [answer] * call.count},
                }
            )
        return outputs


def _choices_per_request(llm: LLM) -> int:
    """How many answers one request carries: ``n`` where an HTTP provider takes it, else one each.

    An LLM that is not an HTTP provider (the local model) makes all of a call's answers in one
    request, as the run counts it.
    """
    per_request = getattr(llm, "choices_per_request", None)
    if callable(per_request):
        return max(1, int(per_request()))
    return sys.maxsize


__all__ = ["UNBOUNDED_OUTPUT", "Forecaster", "RunEstimate", "StepEstimate", "stand_in"]
