"""Retrying transient failures: exponential backoff with full jitter, honouring Retry-After.

It lives in core so that every provider, ours or a third party's, retries the same way: a
provider only has to raise the right :class:`~taskloom.errors.RetryableError` subclass.
Full jitter spreads a burst of 429s over the whole backoff window, so thousands of requests in
flight do not come back at the same instant and trip the limit again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from taskloom.errors import RetryableError

logger = logging.getLogger("taskloom.retry")

T = TypeVar("T")


class RetryPolicy(BaseModel):
    """How often and how long to retry a transient failure."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=6, ge=1, description="Tries in all, the first included.")
    initial_delay: float = Field(default=1.0, ge=0, description="Backoff before the second try, in seconds.")
    multiplier: float = Field(default=2.0, ge=1, description="Backoff growth per try.")
    max_delay: float = Field(default=60.0, ge=0, description="Longest backoff between two tries.")
    max_retry_after: float = Field(default=300.0, ge=0, description="Longest wait a server's Retry-After may impose.")

    def delay(
        self, retry: int, retry_after: float | None = None, rng: random.Random | None = None, paced: bool = False
    ) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry).

        ``paced``: a rate limiter decides when the retry may start (its buckets, its pause), so
        the server's ``retry_after`` is all that is waited here; backoff on top would leave the
        allowance unused.
        """
        if paced:
            return min(retry_after or 0.0, self.max_retry_after)
        ceiling = min(self.max_delay, self.initial_delay * self.multiplier ** (retry - 1))
        backoff = (rng or random).uniform(0, ceiling)
        if retry_after is not None:
            return max(min(retry_after, self.max_retry_after), backoff)
        return backoff

    async def run(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        on_retry: Callable[[RetryableError, int, float], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> T:
        """Await ``attempt()`` until it succeeds, retrying :class:`RetryableError` only.

        When the tries run out, the last error is raised with ``attempts`` set on it.
        """
        for number in range(1, self.max_attempts + 1):
            try:
                return await attempt()
            except RetryableError as error:
                error.attempts = number  # type: ignore[attr-defined]
                if number == self.max_attempts:
                    raise
                wait = self.delay(number, error.retry_after, paced=error.paced)
                logger.debug("retry %d after %.2fs: %s", number, wait, error)
                if on_retry is not None:
                    on_retry(error, number, wait)
                await sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover


NO_RETRY = RetryPolicy(max_attempts=1)
"""For tests and for callers that retry on their own."""
