"""The rate-limited test server refuses what goes over its limits, the way the APIs do.

Tests of the client's limiter trust this server's counts, so its own behaviour is checked here
with a plain aiohttp client that has no limiter at all.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest

from taskloom.testing.ratelimited import RateLimitedServer, duration

Answer = tuple[int, Mapping[str, str], Any]
"""Status, headers (names in any case), JSON body."""


def chat(content: str = "What is two plus two?", **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


def burst(url: str, bodies: list[dict[str, Any]]) -> list[tuple[Answer, float]]:
    """Every body posted at once: (status, headers, JSON body) and the seconds each answer took."""

    async def main() -> list[tuple[Answer, float]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def one(body: dict[str, Any]) -> tuple[Answer, float]:
                started = time.monotonic()
                async with session.post(f"{url}/chat/completions", json=body) as response:
                    answer = (response.status, response.headers.copy(), await response.json())
                return answer, time.monotonic() - started

            return await asyncio.gather(*(one(body) for body in bodies))

    return asyncio.run(main())


def post(url: str, body: dict[str, Any]) -> Answer:
    (answer, _), *_ = burst(url, [body])
    return answer


def test_a_burst_over_the_requests_limit_is_refused_at_once_with_retry_after() -> None:
    # 10 at once, then one a second: the burst may take most of a second to arrive on a loaded
    # machine and still meet a full bucket with no refill in between.
    with RateLimitedServer(requests_per_minute=60, burst_seconds=10, delay=0.5) as server:
        answers = burst(server.url, [chat(f"question {i}") for i in range(30)])
        stats = server.stats()
    statuses = [status for (status, _, _), _ in answers]
    assert statuses.count(200) == 10 and statuses.count(429) == 20
    assert stats["requests"] == 30 and stats["answered"] == 10 and stats["rate_limited"] == 20
    assert stats["max_in_flight"] >= 10 and stats["burst_requests"] == 10
    for (status, headers, body), took in answers:
        if status == 200:
            assert took >= 0.5
            continue
        assert took < 0.4, "a refusal comes at once, without the answer's delay"
        assert body["error"]["code"] == "rate_limit_exceeded"
        millis, seconds = int(headers["retry-after-ms"]), float(headers["retry-after"])
        assert 0 < millis <= 1000 and seconds * 1000 >= millis and seconds == round(seconds, 1)
        assert headers["x-ratelimit-limit-requests"] == "60"
        assert headers["x-ratelimit-remaining-requests"] == "0"


def test_limit_headers_on_answers_and_refusals_and_none_when_switched_off() -> None:
    with RateLimitedServer(requests_per_minute=120, tokens_per_minute=60_000) as server:
        status, headers, _ = post(server.url, chat())
    assert status == 200
    assert headers["x-ratelimit-limit-requests"] == "120" and headers["x-ratelimit-remaining-requests"] == "1"
    assert headers["x-ratelimit-limit-tokens"] == "60000"
    assert headers["x-ratelimit-reset-requests"].endswith("ms")

    with RateLimitedServer(requests_per_minute=60, limit_headers=False) as server:
        answers = [answer for answer, _ in burst(server.url, [chat(), chat()])]
    assert sorted(status for status, _, _ in answers) == [200, 429]
    for status, headers, _ in answers:
        assert not any(name.lower().startswith("x-ratelimit") for name in headers)
        assert status == 200 or headers["retry-after"] == "1"


def test_the_tokens_limit_counts_the_prompt_and_max_tokens_for_each_answer() -> None:
    # 100 tokens at once, then 10 a second (slow, so a burst that takes a while to arrive on a loaded
    # machine still meets the bucket as it was); each request: 40 characters (10 tokens) + 2 x 20 = 50.
    body = chat("x" * 40, max_tokens=20, n=2)
    with RateLimitedServer(tokens_per_minute=600, burst_seconds=10) as server:
        answers = [answer for answer, _ in burst(server.url, [body, body, body])]
        stats = server.stats()
    assert sorted(status for status, _, _ in answers) == [200, 200, 429]
    assert stats["tokens_charged"] == 100
    refused = next(headers for status, headers, _ in answers if status == 429)
    assert 4000 <= int(refused["retry-after-ms"]) <= 5000  # 50 tokens at 10 a second
    assert "x-ratelimit-limit-requests" not in refused and refused["x-ratelimit-limit-tokens"] == "600"
    usage = next(body for status, _, body in answers if status == 200)["usage"]
    assert usage["prompt_tokens"] == 10 and 0 < usage["completion_tokens"] <= 40  # what was used, not reserved


def test_answers_depend_on_the_prompt_alone_and_honour_n() -> None:
    with RateLimitedServer() as server:
        first = post(server.url, chat("Name a colour", n=3))
        again = post(server.url, chat("Name a colour", n=3))
        one = post(server.url, chat("Name a colour", max_completion_tokens=2))
    texts = [c["message"]["content"] for c in first[2]["choices"]]
    assert texts[0] == "Answer to: Name a colour" and len(set(texts)) == 3
    assert [c["message"]["content"] for c in again[2]["choices"]] == texts
    assert one[2]["choices"][0]["finish_reason"] == "length" and one[2]["usage"]["completion_tokens"] == 2


def test_down_answers_every_request_with_its_status_until_up_again() -> None:
    with RateLimitedServer(requests_per_minute=6000) as server:
        server.down(503)
        assert [post(server.url, chat())[0] for _ in range(3)] == [503, 503, 503]
        server.down(None)
        assert post(server.url, chat())[0] == 200
        stats = server.stats()
    assert (stats["requests"], stats["failed"], stats["answered"]) == (4, 3, 1)


def test_a_prompt_answered_twice_is_paid_twice_and_reset_forgets() -> None:
    with RateLimitedServer() as server:
        for content in ("a", "b", "a", "a"):
            post(server.url, chat(content))
        assert server.stats()["paid_twice"] == 2
        assert sorted(server.paid().values()) == [1, 3]
        with urllib.request.urlopen(f"{server.root}/stats") as response:
            assert json.loads(response.read()) == server.stats()
        urllib.request.urlopen(urllib.request.Request(f"{server.root}/reset", method="POST")).close()
        assert server.stats()["requests"] == 0 and server.paid() == {} and server.arrivals() == []


def test_reset_fills_the_buckets_again() -> None:
    with RateLimitedServer(requests_per_minute=60) as server:
        assert [post(server.url, chat())[0] for _ in range(2)] == [200, 429]
        server.reset()
        assert post(server.url, chat())[0] == 200


def test_runs_as_its_own_process() -> None:
    with socket.socket() as probe:  # a free port: take one, then give it back
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    command = [sys.executable, "-m", "taskloom.testing.ratelimited", "--port", str(port), "--rpm", "60"]
    process = subprocess.Popen([*command, "--no-limit-headers"])
    try:
        root = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{root}/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        answers = [answer for answer, _ in burst(f"{root}/v1", [chat(), chat()])]
        with urllib.request.urlopen(f"{root}/stats") as response:
            stats = json.loads(response.read())
    finally:
        process.terminate()
        process.wait(10)
    assert sorted(status for status, _, _ in answers) == [200, 429]
    assert not any("x-ratelimit-limit-requests" in headers for _, headers, _ in answers)
    assert (stats["answered"], stats["rate_limited"], stats["limit_headers"]) == (1, 1, False)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.12, "120ms"), (0.0, "0ms"), (1.0, "1s"), (1.5, "1.5s"), (360.0, "6m0s"), (61.25, "1m1.25s")],
)
def test_reset_times_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="requests_per_minute"):
        RateLimitedServer(requests_per_minute=0)
