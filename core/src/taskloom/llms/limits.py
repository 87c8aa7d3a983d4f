"""Rate limits and adaptive concurrency: one limiter per API account and model, shared in a process.

An API's limits belong to the account, not to the step that calls it: two steps, or two copies
of one LLM, that use the same provider, endpoint, key and model draw on one allowance. So every
:class:`~taskloom.llms.http.HTTPLLM` with the same :func:`limiter_key` gets the same
:class:`Limiter`, and it owns three things:

* **Token buckets** for requests and tokens per minute. A request *reserves* its cost before it
  is sent (its tokens estimated from the prompt's length and ``max_new_tokens``); a bucket may go
  into debt, and whoever reserved into debt waits until the debt is repaid. Waiters therefore
  leave in the order they came, each after exactly the wait it needs, with no polling and no
  herd of sleepers waking together. When the answer reports its usage the estimate is corrected.
  The bucket holds at most one second of allowance: it paces requests evenly instead of sending a
  minute's worth at once, which is how the APIs enforce their limits (over short intervals).
* **What the API says**: ``x-ratelimit-*`` (OpenAI), ``anthropic-ratelimit-*`` (Anthropic) and
  ``Retry-After``. A reported limit is adopted when the user set none; a lower ``remaining``
  than ours lowers ours (someone else uses the key); ``Retry-After`` holds back every new request
  until then, not just the one that was refused.
* **Adaptive concurrency** (AIMD, as TCP does it): the gate lets everything through until a 429
  or 529 arrives, then allows half of what was in flight, and one more per window of successes,
  until it is back at the callers' own ``max_concurrency`` and stops limiting. A burst of refusals
  to requests sent before the last decrease counts once, so one storm halves the limit once.
  When nothing is known yet (no limit set or reported, ``max_concurrency`` left at its default),
  the first requests do not all leave at once: the gate starts at :data:`SLOW_START` and doubles
  each round trip until the first answers report the API's limits (then the buckets pace), the
  API refuses one (then AIMD), or ``max_concurrency`` is reached. An explicit ``max_concurrency``
  is taken as what the endpoint takes, and starts at once.

Everything here is cheap on the hot path: with no limit binding, a request costs one lock and a
few additions on the way in and out.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from taskloom.llms.inputs import IMAGE_TOKENS, images_in, text_of
from taskloom.typing import ChatType

BUCKET_SECONDS = 0.9
"""How much allowance a bucket holds: a little under one second's worth, so requests are paced, not
bursted, and stay under an API that enforces its limit over one-second intervals even when the
first requests reach it later than they left (connections being opened)."""
REFUSED = frozenset({429, 503, 529})
"""The statuses that say "too much, slow down": rate limited, unavailable, overloaded."""
SLOW_START = 8
"""Requests in flight at first, for an LLM whose ``max_concurrency`` was not set and whose limits
are not known: until the first answers say what the API allows, or the API refuses one."""


def estimate_tokens(chat: ChatType, max_new_tokens: int | None, n: int = 1) -> int:
    """A request's tokens before it is sent: the prompt at about four characters a token, plus
    ``max_new_tokens`` per answer (what the APIs themselves count against a tokens limit).

    The APIs' own tokenizers are not at hand (and differ per model); each reservation is
    corrected to what the answer says was charged, so an error in the estimate is paid back as
    answers come (the reservations made before the first answer carry it meanwhile).
    """
    if isinstance(chat, str):  # raw text, completed as it is
        return len(chat) // 4 + 1 + (max_new_tokens or 0) * n
    characters = 0
    images = 0
    for message in chat:
        content = message["content"]
        if isinstance(content, str):
            characters += len(content)
        else:
            characters += len(text_of(content))
            images += images_in(content)
    prompt = characters // 4 + 4 * len(chat) + 3 + images * IMAGE_TOKENS
    return prompt + (max_new_tokens or 0) * n


@dataclass(frozen=True, slots=True)
class ReportedLimits:
    """What one response's headers say about the account's limits; None where they say nothing."""

    request_limit: int | None = None
    request_remaining: int | None = None
    token_limit: int | None = None
    token_remaining: int | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str] | None) -> ReportedLimits | None:
        if not headers:
            return None
        get = headers.get
        values = (
            _int(get("x-ratelimit-limit-requests") or get("anthropic-ratelimit-requests-limit")),
            _int(get("x-ratelimit-remaining-requests") or get("anthropic-ratelimit-requests-remaining")),
            _int(get("x-ratelimit-limit-tokens") or get("anthropic-ratelimit-tokens-limit")),
            _int(get("x-ratelimit-remaining-tokens") or get("anthropic-ratelimit-tokens-remaining")),
        )
        return cls(*values) if any(v is not None for v in values) else None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


class Bucket:
    """A token bucket that can go into debt: ``reserve`` says how long the caller must wait."""

    __slots__ = ("capacity", "level", "per_minute", "rate", "updated")

    def __init__(self, per_minute: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * BUCKET_SECONDS)
        self.level = self.capacity
        self.updated = time.monotonic()

    def set_rate(self, per_minute: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * BUCKET_SECONDS)
        self.level = min(self.level, self.capacity)

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def reserve(self, cost: float, now: float) -> float:
        """Take ``cost`` now; the seconds until the bucket is out of debt again (0: go at once).

        A request larger than the whole bucket waits for a full bucket and then takes it all.
        """
        self._refill(now)
        if cost > self.capacity:
            wait = (self.capacity - self.level) / self.rate
            self.level -= cost
            return max(0.0, wait)
        self.level -= cost
        return -self.level / self.rate if self.level < 0 else 0.0

    def give_back(self, amount: float, now: float) -> None:
        """Return ``amount`` (an over-estimate, or a reservation never used); negative takes more."""
        self._refill(now)
        self.level = min(self.capacity, self.level + amount)

    def at_most(self, remaining: float, now: float) -> None:
        """The server says only ``remaining`` is left: never believe in more than that."""
        self._refill(now)
        self.level = min(self.level, remaining)


class Allowance(Protocol):
    """A limit shared with other processes (a cluster's workers): grants part of it on request.

    ``grant(which, amount)`` takes ``amount`` requests (``which="requests"``) or tokens from the
    shared bucket and answers the seconds until they may be used (0: now). A limiter with an
    allowance takes it in chunks of :data:`CHUNK_SECONDS` of the limit, so it asks a few times a
    second, not once per request.
    """

    async def grant(self, which: str, amount: float) -> float: ...


CHUNK_SECONDS = 0.1
"""How much of a shared limit a limiter takes at once: a tenth of a second's worth, so a worker
never holds much that another could use, and asks its allowance about ten times a second."""


class _Credit:
    """What this process holds of a shared limit: ``amount`` usable from ``valid_from`` on."""

    __slots__ = ("amount", "valid_from")

    def __init__(self) -> None:
        self.amount = 0.0
        self.valid_from = 0.0


class Permit:
    """One request's place: what it reserved and when it started."""

    __slots__ = ("started", "tokens")

    def __init__(self, tokens: int, started: float) -> None:
        self.tokens = tokens
        self.started = started


@dataclass(frozen=True, slots=True)
class Settings:
    """What one LLM sharing a limiter asked of it."""

    requests_per_minute: float | None
    tokens_per_minute: float | None
    max_concurrency: int
    adaptive: bool
    slow_start: bool


class Limiter:
    """The requests, tokens and concurrency one account and model allow; see the module docstring."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self.requests: Bucket | None = None
        self.tokens: Bucket | None = None
        self._sharers: dict[int, Settings] = {}
        self._set_rpm: float | None = None
        self._set_tpm: float | None = None
        self.adaptive = True
        self.ceiling = 1
        """The largest ``max_concurrency`` of the LLMs sharing this limiter."""
        self.limit = math.inf
        """In-flight requests the gate allows now; infinite while it does not limit."""
        self._slow_start = False
        """Doubling from :data:`SLOW_START` per round trip until the first refusal, as TCP does."""
        self._informed = False
        self.in_flight = 0
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = collections.deque()
        self._last_decrease = -math.inf
        self._paused_until = 0.0
        self.rate_limited = 0
        """Answers 429 (rate limited) or 529/503 (overloaded) received so far."""
        self.requests_sent = 0
        self.allowance: Allowance | None = None
        """Where the limits set are shared with other processes (see :meth:`share`); None: this process alone."""
        self._credits = {"requests": _Credit(), "tokens": _Credit()}
        self.grants = 0
        """Times this limiter asked its allowance for more."""

    # A copied or pickled LLM finds its limiter again (the same one in this process, the one of
    # its own process after a pickle), configured by its own settings.
    def __deepcopy__(self, memo: dict[int, Any]) -> None:
        return None

    def __reduce__(self) -> tuple[type[None], tuple[()]]:
        return (type(None), ())

    # -- who shares it -----------------------------------------------------------------------------

    def join(self, sharer: int, settings: Settings) -> None:
        """Add (or update) one sharer's settings; the limits in force follow from every current sharer."""
        with self._lock:
            first = not self._sharers
            self._sharers[sharer] = settings
            self._recompute()
            fresh = first and self.requests_sent == 0 and not self._informed  # nothing learnt yet
            if fresh and settings.slow_start and self.adaptive:
                self._slow_start = self.requests is None and self.tokens is None
                if self._slow_start:
                    self.limit = float(min(SLOW_START, self.ceiling))

    def leave(self, sharer: int) -> None:
        """An LLM stopped using this limiter (it was unloaded): its settings no longer count."""
        with self._lock:
            if self._sharers.pop(sharer, None) is not None:
                self._recompute()

    def configure(
        self,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        max_concurrency: int,
        adaptive: bool,
    ) -> None:
        """One anonymous sharer's settings (for a limiter used without an LLM, as in a benchmark)."""
        self.join(id(self), Settings(requests_per_minute, tokens_per_minute, max_concurrency, adaptive, False))

    def _recompute(self) -> None:
        sharers = list(self._sharers.values())
        rpms = [s.requests_per_minute for s in sharers if s.requests_per_minute is not None]
        tpms = [s.tokens_per_minute for s in sharers if s.tokens_per_minute is not None]
        self._set_rpm = min(rpms) if rpms else None
        self._set_tpm = min(tpms) if tpms else None
        if self._set_rpm is not None:
            self._bucket_rate("requests", self._set_rpm)
        if self._set_tpm is not None:
            self._bucket_rate("tokens", self._set_tpm)
        self.ceiling = max((s.max_concurrency for s in sharers), default=1)
        self.adaptive = all(s.adaptive for s in sharers)
        if not self.adaptive:
            self.limit = math.inf
            self._slow_start = False
        elif self.limit != math.inf and self.limit >= self.ceiling:
            self.limit = math.inf

    def _bucket_rate(self, which: str, per_minute: float) -> None:
        bucket: Bucket | None = getattr(self, which)
        if bucket is None:
            setattr(self, which, Bucket(per_minute))
        elif bucket.per_minute != per_minute:
            bucket.set_rate(per_minute)

    def paces(self) -> bool:
        """Whether buckets decide when requests start (a limit set or reported, and adaptive)."""
        return self.adaptive and (self.requests is not None or self.tokens is not None)

    @property
    def counts_tokens(self) -> bool:
        """Whether requests need a token estimate (a tokens limit is set or was reported)."""
        return self.tokens is not None

    def share(self, allowance: Allowance | None) -> None:
        """Keep the limits set (``requests_per_minute``, ``tokens_per_minute``) together with other
        processes that share ``allowance``: each request also waits for its part of it.

        The buckets here still pace this process; the allowance keeps the sum of every process
        under the limit. A limit only reported by the API is not shared: each process learns it
        from its own answers, and backs off on its own 429s.
        """
        with self._lock:
            self.allowance = allowance
            self._credits = {"requests": _Credit(), "tokens": _Credit()}

    async def _shared_ready(self, tokens: int) -> float:
        """When the shared allowance covers this request (a ``time.monotonic()``; 0 for now)."""
        allowance = self.allowance
        assert allowance is not None
        ready = 0.0
        for which, cost, per_minute in (("requests", 1, self._set_rpm), ("tokens", tokens, self._set_tpm)):
            if not cost or per_minute is None:
                continue
            with self._lock:
                credit = self._credits[which]
                if credit.amount >= cost:
                    credit.amount -= cost
                    ready = max(ready, credit.valid_from)
                    continue
                chunk = max(float(cost), per_minute / 60.0 * CHUNK_SECONDS)
                self.grants += 1
            delay = await allowance.grant(which, chunk)  # outside the lock: another process answers
            mine = time.monotonic() + delay  # this request's own turn, whatever the other grants said
            with self._lock:
                if chunk > cost:  # the rest of the chunk is this process's from the same moment
                    credit.amount += chunk - cost
                    credit.valid_from = max(credit.valid_from, mine)
            ready = max(ready, mine)
        return ready

    # -- one request -----------------------------------------------------------------------------

    async def acquire(self, tokens: int = 0) -> Permit:
        """Wait until a request of about ``tokens`` may start; the permit goes back to :meth:`release`.

        The gate comes first and the buckets after it, so a request that waited at the gate is
        still paced, and still held back by a ``Retry-After`` that arrived while it waited.
        """
        if self.limit != math.inf:
            await self._enter_gate()
        else:
            with self._lock:
                self.in_flight += 1
        try:
            now = time.monotonic()
            with self._lock:
                ready = now
                if self.requests is not None:
                    ready += self.requests.reserve(1, now)
                if self.tokens is not None and tokens:
                    ready = max(ready, now + self.tokens.reserve(tokens, now))
            if self.allowance is not None:
                ready = max(ready, await self._shared_ready(tokens))
            while True:
                wait = max(ready, self._paused_until) - time.monotonic()
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
        except BaseException:
            with self._lock:
                self.in_flight -= 1
                self._give_back_locked(tokens)
                self._wake_locked()
            raise
        with self._lock:
            self.requests_sent += 1
        return Permit(tokens, time.monotonic())

    def _give_back_locked(self, tokens: int) -> None:
        now = time.monotonic()
        if self.requests is not None:
            self.requests.give_back(1, now)
        if self.tokens is not None and tokens:
            self.tokens.give_back(tokens, now)

    def _room_locked(self) -> bool:
        return self.limit == math.inf or self.in_flight < math.floor(self.limit)

    async def _enter_gate(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._room_locked():
                    self.in_flight += 1
                    return
                future: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, future))
            try:
                await future
            except BaseException:
                with self._lock:
                    if (loop, future) in self._waiters:
                        self._waiters.remove((loop, future))
                    elif future.done() and not future.cancelled():
                        self._wake_locked()  # pass on the turn this waiter was given
                raise

    def _wake_locked(self) -> None:
        """Wake one waiter for every free slot (all of them when the gate no longer limits)."""
        free = math.inf if self.limit == math.inf else math.floor(self.limit) - self.in_flight
        while self._waiters and free > 0:
            loop, future = self._waiters.popleft()
            if future.done() or loop.is_closed():
                continue
            loop.call_soon_threadsafe(_resolve, future)
            free -= 1

    def release(
        self,
        permit: Permit,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        used_tokens: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        """The request ended: with ``status`` (None for no answer), the answer's headers and usage.

        ``used_tokens`` is what the account was charged for it (what the API counts against its
        tokens limit), so the reservation is corrected to that.
        """
        now = time.monotonic()
        reported = ReportedLimits.from_headers(headers) if headers else None
        with self._lock:
            self.in_flight -= 1
            if self.tokens is not None and used_tokens is not None and permit.tokens:
                self.tokens.give_back(permit.tokens - used_tokens, now)
            if reported is not None:
                self._learn(reported, now)
            if status in REFUSED:
                self._refused(permit, now, retry_after)
            elif status is not None and status < 400 and self.limit != math.inf:
                # Slow start grows by one per answer (doubling each round trip); after a refusal,
                # by one per window of answers.
                self.limit += 1.0 if self._slow_start else 1.0 / self.limit
                if self.limit >= self.ceiling:
                    self.limit = math.inf
                    self._slow_start = False
            self._wake_locked()

    def _refused(self, permit: Permit, now: float, retry_after: float | None) -> None:
        self.rate_limited += 1
        if not self.adaptive:
            return
        if retry_after:
            self._paused_until = max(self._paused_until, now + retry_after)
        if permit.started >= self._last_decrease:  # one storm, one decrease
            self._last_decrease = now
            self._slow_start = False
            current = self.limit if self.limit != math.inf else self.ceiling
            self.limit = max(1.0, min(current, self.in_flight + 1) / 2)

    def _learn(self, reported: ReportedLimits, now: float) -> None:
        if self.adaptive:
            if reported.request_limit and self._set_rpm is None:
                self._bucket_rate("requests", reported.request_limit)
            if reported.token_limit and self._set_tpm is None:
                self._bucket_rate("tokens", reported.token_limit)
            if not self._informed and (reported.request_limit or reported.token_limit):
                self._informed = True
                if self._slow_start:  # the buckets pace from now on: no need to feel the way
                    self._slow_start = False
                    self.limit = math.inf
        if self.requests is not None and reported.request_remaining is not None:
            self.requests.at_most(reported.request_remaining, now)
        if self.tokens is not None and reported.token_remaining is not None:
            self.tokens.at_most(reported.token_remaining, now)

    # -- what the display shows --------------------------------------------------------------------

    def describe(self) -> str:
        """The limits in force, for the progress display and the summary: ``600 req/min, 12 in flight``."""
        parts = []
        if self.requests is not None:
            source = "set" if self._set_rpm is not None else "reported"
            parts.append(f"{self.requests.per_minute:g} req/min ({source})")
        if self.tokens is not None:
            source = "set" if self._set_tpm is not None else "reported"
            parts.append(f"{self.tokens.per_minute:g} tok/min ({source})")
        if self.limit != math.inf:
            how = "slow start" if self._slow_start else "adaptive"
            parts.append(f"{math.floor(self.limit)} in flight ({how})")
        return ", ".join(parts)

    def concurrency(self) -> int | None:
        """The adaptive limit on requests in flight, or None while it does not limit."""
        return None if self.limit == math.inf else math.floor(self.limit)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_LIMITERS: dict[tuple[str, ...], Limiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_key(provider: type[Any], api_root: str, key: str | None, model: str) -> tuple[str, ...]:
    """Who shares a limiter: the provider class, the endpoint, a digest of the key, and the model."""
    digest = hashlib.sha256((key or "").encode()).hexdigest()[:16]
    return (f"{provider.__module__}.{provider.__qualname__}", api_root, digest, model)


def shared_limiter(key: tuple[str, ...]) -> Limiter:
    """The process's limiter for ``key``, created on first use."""
    limiter = _LIMITERS.get(key)
    if limiter is None:
        with _LIMITERS_LOCK:
            limiter = _LIMITERS.setdefault(key, Limiter(f"{key[3]} at {key[1]}"))
    return limiter


def forget_limiters() -> None:
    """Drop every limiter (tests, and a process that starts a new, unrelated run)."""
    with _LIMITERS_LOCK:
        _LIMITERS.clear()


__all__ = [
    "CHUNK_SECONDS",
    "REFUSED",
    "Allowance",
    "Bucket",
    "Limiter",
    "Permit",
    "ReportedLimits",
    "Settings",
    "estimate_tokens",
    "forget_limiters",
    "limiter_key",
    "shared_limiter",
]
