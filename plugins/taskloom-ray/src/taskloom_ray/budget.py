"""A run's budget kept by the whole cluster: one budget actor, drawn on in chunks by each shard.

Core's :class:`~taskloom.pipeline.budget.Budget` reserves each request's worst case before it
starts, so a run ends at most one request under its cap, never over. On a cluster, every shard
spends from the same cap. So the driver starts one budget actor holding the cap, and each shard's
budget takes *grants* from it: dollars and requests, a slice at a time (:data:`SLICE` of the cap,
at least the request at hand), and gives back what it did not spend when the shard ends. A shard
admits a request only within what it was granted, so the shards together never pass the cap. The
price of slicing: when the cap is nearly spent, a shard may stop while another still holds an
unspent slice, so a run may end up to one slice per running shard under the cap.
"""

from __future__ import annotations

from typing import Any

from taskloom.plugin import Budget

SLICE = 0.02
"""The share of the cap a shard asks for at once: the actor is asked about fifty times a run."""


class BudgetActor:
    """The cap of a run and what has been granted from it (wrapped by ``ray.remote`` at run time)."""

    def __init__(self, budget_usd: float | None, max_requests: int | None) -> None:
        self.budget_usd = budget_usd
        self.max_requests = max_requests
        self.granted_usd = 0.0
        self.granted_requests = 0

    def grant(self, usd: float, requests: int) -> tuple[float, int]:
        """Up to ``usd`` dollars and ``requests`` requests, as much of each as is left."""
        give_usd = 0.0
        if self.budget_usd is not None:
            give_usd = max(0.0, min(usd, self.budget_usd - self.granted_usd))
            self.granted_usd += give_usd
        give_requests = 0
        if self.max_requests is not None:
            give_requests = max(0, min(requests, self.max_requests - self.granted_requests))
            self.granted_requests += give_requests
        return give_usd, give_requests

    def give_back(self, usd: float, requests: int) -> None:
        """What a shard was granted and did not spend."""
        self.granted_usd -= max(0.0, usd)
        self.granted_requests -= max(0, requests)


class ShardBudget(Budget):
    """One shard's budget: core's, whose limits are what the budget actor granted it so far.

    ``budget_usd`` and ``max_requests`` start at nothing granted and grow by slices; the run's
    own cap is ``cap_usd`` / ``cap_requests``.
    """

    def __init__(self, actor: Any, budget_usd: float | None, max_requests: int | None) -> None:
        super().__init__(0.0 if budget_usd is not None else None, 0 if max_requests is not None else None)
        self.actor = actor
        self.cap_usd = budget_usd
        self.cap_requests = max_requests

    def admit(self, worst_case: float) -> str | None:
        import ray

        want_usd = 0.0
        if self.budget_usd is not None and self.cap_usd is not None:
            short = self.spent + self.reserved + worst_case - self.budget_usd
            want_usd = max(short, self.cap_usd * SLICE) if short > 0 else 0.0
        want_requests = 0
        if self.max_requests is not None and self.cap_requests is not None and self.requests >= self.max_requests:
            want_requests = max(1, int(self.cap_requests * SLICE))
        if want_usd or want_requests:
            usd, requests = ray.get(self.actor.grant.remote(want_usd, want_requests))  # a few times a shard
            if self.budget_usd is not None:
                self.budget_usd += usd
            if self.max_requests is not None:
                self.max_requests += requests
        return super().admit(worst_case)

    def settle(self) -> None:
        """Give back what was granted and not spent (the shard ended)."""
        import ray

        unspent_usd = self.budget_usd - self.spent if self.budget_usd is not None else 0.0
        unspent_requests = self.max_requests - self.requests if self.max_requests is not None else 0
        ray.get(self.actor.give_back.remote(unspent_usd, unspent_requests))
        if self.budget_usd is not None:
            self.budget_usd = self.spent
        if self.max_requests is not None:
            self.max_requests = self.requests
