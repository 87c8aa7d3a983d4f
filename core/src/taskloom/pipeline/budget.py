"""A run's spending limits: dollars and requests, checked before every request starts.

A request's cost is known only when its answer arrives, so a request *reserves* its worst case
before it starts (its prompt's estimated tokens, and ``max_new_tokens`` for every answer) and
gives the reservation back when it ends, leaving what it really cost. A request starts only if
the spend so far, plus every reservation in flight, plus its own worst case stays within the
budget: so the budget holds even with a thousand requests in flight, and the run ends at most one
request's worth under it, never over.

The budget is what *this* run spends: generations found in the run's cache cost nothing again,
so the same run with a larger budget resumes where it stopped and pays only for what is new.
"""

from __future__ import annotations

from taskloom.llms.limits import estimate_tokens
from taskloom.pricing import Price
from taskloom.typing import ChatType


class Budget:
    """Dollars and requests a run may spend; :meth:`admit` says whether one more may start."""

    def __init__(self, budget_usd: float | None = None, max_requests: int | None = None) -> None:
        self.budget_usd = budget_usd
        self.max_requests = max_requests
        self.spent = 0.0
        self.reserved = 0.0
        self.requests = 0

    def estimate(
        self,
        price: Price | None,
        chat: ChatType,
        count: int,
        max_new_tokens: int | None,
        batch: bool,
        input_factor: float = 1.0,
    ) -> float:
        """The most one request for ``count`` answers to ``chat`` can cost.

        ``input_factor`` scales the prompt's estimated tokens by what the API has reported so far
        for this step (its tokenizer, a system prompt it adds), so the estimate learns.
        """
        if price is None or self.budget_usd is None:
            return 0.0
        prompt = estimate_tokens(chat, None) * count * input_factor
        return price.cost(round(prompt), (max_new_tokens or 0) * count, batch=batch)

    def admit(self, worst_case: float) -> str | None:
        """Reserve one request of at most ``worst_case`` dollars; the reason to stop if it may not start."""
        if self.max_requests is not None and self.requests >= self.max_requests:
            return "max_requests"
        if self.budget_usd is not None and self.spent + self.reserved + worst_case > self.budget_usd:
            return "budget"
        self.requests += 1
        self.reserved += worst_case
        return None

    def release(self, worst_case: float) -> None:
        """The request ended: its reservation goes back (what it cost arrives through :meth:`spend`)."""
        self.reserved -= worst_case

    def spend(self, dollars: float) -> None:
        self.spent += dollars


__all__ = ["Budget"]
