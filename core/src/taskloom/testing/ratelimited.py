"""A loopback OpenAI-compatible chat server that enforces requests and tokens per minute.

A client's rate limiter can only be judged against a server that refuses what goes over the
limit, the way the APIs do: at once, with ``429``, ``Retry-After`` and (optionally) OpenAI's
``x-ratelimit-*`` headers. Counting what it refused, and what it was paid for twice, is how a
test or a benchmark tells a limiter that paces from one that merely retries.

The limits are token buckets of ``limit / 60`` per second holding ``burst_seconds`` of that
(at least one request), full at the start. They are this module's own, not the client's
:class:`~taskloom.llms.limits.Bucket`: a server built on the code under test would share its
mistakes. A request costs what OpenAI counts before it answers: the prompt (its characters / 4)
plus ``max_tokens`` (or ``max_completion_tokens``) for each of ``n`` answers, whatever the answer
then uses; that is charged at arrival and never given back. A refused request takes nothing; one
costing more than a full bucket passes when the bucket is full and leaves it in debt (else it
never could).
Headers describe the buckets as the request found them, on arrival: like a gateway in front of
the model, the server decides before the ``delay`` of the answer.

Every answer is a function of the prompt alone, so a rerun that asks again is visible as the
same prompt answered twice (``paid_twice``). ``down(status)`` answers every chat request with
that status until ``down(None)``, for failover tests.

In a test, a background thread with its own event loop::

    with RateLimitedServer(requests_per_minute=1200, delay=0.05) as server:
        llm = get_llm("openai", model="m", base_url=server.url, api_key="none")
        ...
        assert server.stats()["rate_limited"] == 0

For a benchmark, in a process of its own (its CPU is then not the client's); ``GET /stats``
answers the same dict as :meth:`RateLimitedServer.stats` and ``POST /reset`` resets it::

    python -m taskloom.testing.ratelimited --port 8398 --rpm 600 --delay 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import threading
import time
from collections import Counter
from typing import Any

from aiohttp import web


class _Bucket:
    """One limit: refuses what does not fit now, and says how long until it would."""

    __slots__ = ("capacity", "level", "per_minute", "rate", "updated")

    def __init__(self, per_minute: int, burst_seconds: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity
        self.updated = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait(self, cost: float) -> float:
        """Seconds until ``cost`` fits (0: now); a cost above the capacity waits for a full bucket."""
        return max(0.0, min(cost, self.capacity) - self.level) / self.rate

    def until_full(self) -> float:
        return (self.capacity - self.level) / self.rate

    def fill(self) -> None:
        self.level = self.capacity
        self.updated = time.monotonic()


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes it (Go's duration format): ``120ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def prompt_tokens(messages: list[Any]) -> int:
    """The prompt's tokens as a rate limit counts them before any tokenizer: characters / 4."""
    characters = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else message
        if isinstance(content, list):  # content parts: only the text ones have characters
            characters += sum(len(str(p.get("text", ""))) for p in content if isinstance(p, dict))
        elif content is not None:
            characters += len(str(content))
    return math.ceil(characters / 4)


def answer_text(messages: list[Any]) -> str:
    """The answer: a function of the last user message alone."""
    last = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    content = last.get("content") if last is not None else ""
    return f"Answer to: {str(content)[:40]}"


class _State:
    """Limits, counters and the outage switch, shared by the handlers and the thread that reads them."""

    def __init__(
        self,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
        burst_seconds: float,
        delay: float,
        limit_headers: bool,
    ) -> None:
        for name, value in (("requests_per_minute", requests_per_minute), ("tokens_per_minute", tokens_per_minute)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be above 0 (or None for no limit), not {value}")
        if burst_seconds <= 0:
            raise ValueError(f"burst_seconds must be above 0, not {burst_seconds}")
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.burst_seconds = burst_seconds
        self.delay = delay
        self.limit_headers = limit_headers
        self.lock = threading.Lock()
        self.requests = _Bucket(requests_per_minute, burst_seconds) if requests_per_minute else None
        self.tokens = _Bucket(tokens_per_minute, burst_seconds) if tokens_per_minute else None
        self.status_down: int | None = None
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.counts: Counter[str] = Counter()
            self.paid: Counter[str] = Counter()
            self.arrivals: list[tuple[float, int]] = []
            self.in_flight = 0
            self.max_in_flight = 0
            self.tokens_charged = 0
            self.first_at: float | None = None
            self.last_at: float | None = None
            self.status_down = None
            for bucket in (self.requests, self.tokens):
                if bucket is not None:
                    bucket.fill()

    def admit(self, cost: int, now: float) -> tuple[float, dict[str, str]]:
        """Charge one request of ``cost`` tokens, or refuse it: (seconds to wait, 0 if admitted; headers)."""
        with self.lock:
            wait = 0.0
            for bucket, amount in ((self.requests, 1), (self.tokens, cost)):
                if bucket is not None:
                    bucket.refill(now)
                    wait = max(wait, bucket.wait(amount))
            if wait == 0:
                if self.requests is not None:
                    self.requests.level -= 1
                if self.tokens is not None:
                    self.tokens.level -= cost
                self.tokens_charged += cost
            return wait, self._limit_headers() if self.limit_headers else {}

    def _limit_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for which, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is not None:
                headers[f"x-ratelimit-limit-{which}"] = str(bucket.per_minute)
                headers[f"x-ratelimit-remaining-{which}"] = str(max(0, math.floor(bucket.level)))
                headers[f"x-ratelimit-reset-{which}"] = duration(bucket.until_full())
        return headers

    def arrived(self, now: float) -> None:
        with self.lock:
            self.counts["requests"] += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.first_at is None:
                self.first_at = now
            self.last_at = now

    def ended(self, now: float, outcome: str, status: int, digest: str | None = None) -> None:
        with self.lock:
            self.in_flight -= 1
            self.counts[outcome] += 1
            self.arrivals.append((now, status))
            if digest is not None:
                self.paid[digest] += 1

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.counts["requests"],
                "answered": self.counts["answered"],
                "rate_limited": self.counts["rate_limited"],
                "failed": self.counts["failed"],
                "paid_twice": sum(count - 1 for count in self.paid.values() if count > 1),
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "tokens_charged": self.tokens_charged,
                "first_at": self.first_at,
                "last_at": self.last_at,
                "requests_per_minute": self.requests_per_minute,
                "tokens_per_minute": self.tokens_per_minute,
                "burst_seconds": self.burst_seconds,
                "burst_requests": self.requests.capacity if self.requests is not None else None,
                "delay": self.delay,
                "limit_headers": self.limit_headers,
                "down": self.status_down,
            }


def _error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "code": kind}}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


def make_app(state: _State) -> web.Application:
    """The server's routes over ``state``: chat completions, ``/stats``, ``/reset``, ``/health``."""

    async def chat(request: web.Request) -> web.Response:
        now = time.monotonic()  # before the body: the moment the request reached the handler
        state.arrived(now)
        try:
            body = await request.json()
        except ValueError:
            state.ended(now, "failed", 400)
            return _error(400, "the body is not JSON", "invalid_request_error")
        down = state.status_down
        if down is not None:
            state.ended(now, "failed", down)
            return _error(down, f"scripted outage (HTTP {down})", "server_error")
        messages = body.get("messages") or []
        n = int(body.get("n") or 1)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        prompt = prompt_tokens(messages)
        wait, headers = state.admit(prompt + int(max_tokens or 0) * n, now)
        if wait > 0:
            state.ended(now, "rate_limited", 429)
            headers["retry-after"] = f"{math.ceil(wait * 10) / 10:g}"
            headers["retry-after-ms"] = str(math.ceil(wait * 1000))
            return _error(429, f"Rate limit reached: try again in {wait:.3f}s", "rate_limit_exceeded", headers)
        if state.delay:
            try:
                await asyncio.sleep(state.delay)
            except BaseException:  # the server is closing: neither answered nor paid
                state.ended(now, "dropped", 0)
                raise
        digest = hashlib.sha256(json.dumps([body.get("model"), messages], sort_keys=True).encode()).hexdigest()
        state.ended(now, "answered", 200, digest[:16])
        text = answer_text(messages)
        choices, completion = [], 0
        for i in range(n):
            content = text if i == 0 else f"{text} (#{i + 1})"
            finish = "stop"
            if max_tokens and math.ceil(len(content) / 4) > int(max_tokens):
                content, finish = content[: int(max_tokens) * 4], "length"
            completion += math.ceil(len(content) / 4)
            choices.append({"index": i, "finish_reason": finish, "message": {"role": "assistant", "content": content}})
        payload = {
            "id": f"chatcmpl-{digest[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "ratelimited"),
            "choices": choices,
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }
        return web.Response(text=json.dumps(payload), content_type="application/json", headers=headers)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(state.stats())

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return web.json_response({"status": "ok"})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_get("/health", health)
    return app


class RateLimitedServer:
    """The server on a loopback port, in a thread with its own event loop; usable as a context manager.

    It listens from construction on (``port=0``: a free one); ``close()`` stops it.
    """

    def __init__(
        self,
        *,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        burst_seconds: float = 1.0,
        delay: float = 0.0,
        limit_headers: bool = True,
        port: int = 0,
    ) -> None:
        self._state = _State(requests_per_minute, tokens_per_minute, burst_seconds, delay, limit_headers)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rate-limited-server", daemon=True)
        self._thread.start()
        self._runner = web.AppRunner(make_app(self._state), access_log=None, shutdown_timeout=1.0)
        try:
            port = asyncio.run_coroutine_threadsafe(self._start(port), self._loop).result(timeout=10)
        except BaseException:
            self._stop_loop()
            raise
        self.url = f"http://127.0.0.1:{port}/v1"
        """The OpenAI-style API root: chat completions are posted to ``{url}/chat/completions``."""
        self.root = f"http://127.0.0.1:{port}"
        """Where ``/stats`` and ``/reset`` are."""

    async def _start(self, port: int) -> int:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, backlog=2048)
        await site.start()
        return int(self._runner.addresses[0][1])

    def stats(self) -> dict[str, Any]:
        """Requests received, ``answered`` (200), ``rate_limited`` (429), ``failed`` (while down), and more.

        ``paid_twice`` counts answers to a prompt (and model) already answered; ``first_at`` and
        ``last_at`` are the ``time.monotonic()`` arrivals of the first and the last request.
        """
        return self._state.stats()

    def paid(self) -> dict[str, int]:
        """Answers (200) per prompt digest: a prompt answered twice was paid twice."""
        with self._state.lock:
            return dict(self._state.paid)

    def arrivals(self) -> list[tuple[float, int]]:
        """Every chat request ended so far: (``time.monotonic()`` of its arrival, status), by arrival."""
        with self._state.lock:
            return sorted(self._state.arrivals)

    def down(self, status: int | None) -> None:
        """Answer every chat request with ``status`` (500, 503, ...) until ``down(None)``."""
        with self._state.lock:
            self._state.status_down = status

    def reset(self) -> None:
        """Back to how it started: counters empty, buckets full, not down."""
        self._state.reset()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
            # Answers still waiting out their delay end here, not as "destroyed but pending" noise.
            asyncio.run_coroutine_threadsafe(_cancel_the_rest(), self._loop).result(timeout=10)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> RateLimitedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _cancel_the_rest() -> None:
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m taskloom.testing.ratelimited", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute (default: no limit)")
    parser.add_argument("--tpm", type=int, default=None, help="tokens per minute (default: no limit)")
    parser.add_argument("--burst-seconds", type=float, default=1.0, help="seconds of allowance a bucket holds")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--no-limit-headers", action="store_true", help="send no x-ratelimit-* headers")
    args = parser.parse_args(argv)
    state = _State(args.rpm, args.tpm, args.burst_seconds, args.delay, not args.no_limit_headers)
    # backlog: a client without limits opens hundreds of connections at once
    web.run_app(make_app(state), host="127.0.0.1", port=args.port, print=None, backlog=2048, access_log=None)


__all__ = ["RateLimitedServer", "make_app"]


if __name__ == "__main__":
    main()
