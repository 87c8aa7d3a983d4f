"""The shared rate limiter against a server that enforces its limits, through the real OpenAI provider.

The limiter's unit arithmetic says little about whether a run stays under an API's limits: that
depends on timing, on retries, on two steps drawing on one account. So every test here runs
``taskloom-openai`` (or a whole ``Pipeline``) against :class:`RateLimitedServer` and judges the
client by the server's own record: when each request arrived, and what it refused. Limits are
high (1,200 requests a minute and up) so that each test takes a few seconds; the server's bucket
holds a little more than the client's (1.2 s against 1 s) where a test wants no refusal at all,
since the two clocks see each request a few milliseconds apart.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from taskloom import Pipeline, get_llm, get_step, get_task
from taskloom.llms import limits
from taskloom.llms.http import HTTPLLM
from taskloom.llms.limits import Limiter, forget_limiters
from taskloom.retry import RetryPolicy
from taskloom.testing.ratelimited import RateLimitedServer

RPM = 1200
"""20 requests a second: 60 requests take about two seconds after the first second's 20."""
SLACK = 1.05
"""How far over the limit a measured rate may be: the clocks of client and server differ by jitter."""
JITTER = 0.1
"""Seconds a request may reach the server late or early of its release by the limiter (a thread
switch, a slow connection on a loaded 2-core machine). A rate is timed over its span plus this
much, so two arrivals that bunch up do not read as over-sending; a client 10% over its limit still
fails, and one that ignored a shared limiter would be twice over."""
LONG = "please answer this question, which is long enough to be worth a hundred tokens or so: " * 4
"""A prefix that makes the prompt's tokens, not the per-message overhead of the estimate, the cost."""
_MADE: list[HTTPLLM] = []


@pytest.fixture(autouse=True)
def _fresh_limiters() -> Iterator[None]:
    forget_limiters()
    yield
    while _MADE:
        _MADE.pop().unload()  # closes its client session, on the loop it was opened on
    forget_limiters()


def openai(server: RateLimitedServer, **settings: Any) -> HTTPLLM:
    settings = {"model": "m", "api_key": "none", **settings}
    llm = get_llm("openai", base_url=server.url, **settings)
    assert isinstance(llm, HTTPLLM)
    _MADE.append(llm)
    return llm


def chats(count: int, prefix: str = "question") -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"{prefix} number {i:03d}, please answer"}] for i in range(count)]


def generate(llm: HTTPLLM, count: int, prefix: str = "question", max_new_tokens: int = 16) -> None:
    """``count`` prompts through ``llm.generate``, every one of which must be answered."""
    outputs = llm.generate(chats(count, prefix), max_new_tokens=max_new_tokens)
    assert all(output["generations"][0] for output in outputs), [o.get("error") for o in outputs]


def answered(server: RateLimitedServer) -> list[float]:
    """When each answered request arrived, in order."""
    return [at for at, status in server.arrivals() if status == 200]


def steady_rate(times: list[float], burst: float) -> float:
    """Requests a second after the first ``burst``, which a bucket lets through at once.

    Timed from the arrival that ends the burst, not from the first: the first requests of a
    client also wait for its connections to open (longer on a loaded machine), while the ones
    after are paced by the limiter's clock, which started before; timing from the first arrival
    would read that set-up time as speed.
    """
    first = math.ceil(burst)
    assert len(times) > first + 10, "too few requests to measure a rate"
    return (len(times) - 1 - first) / (times[-1] - times[first] + JITTER)


def test_requests_per_minute_keeps_the_rate_at_or_under_the_limit() -> None:
    with RateLimitedServer(requests_per_minute=RPM, burst_seconds=1.2, delay=0.05) as server:
        llm = openai(server, requests_per_minute=RPM)
        generate(llm, 60)
        stats, times = server.stats(), answered(server)
    assert stats["rate_limited"] <= 1, stats
    rate = steady_rate(times, RPM / 60)
    assert 0.8 * RPM / 60 <= rate <= SLACK * RPM / 60, f"{rate:.1f} requests a second"
    assert llm.limiter().describe().startswith(f"{RPM} req/min (set)")


def test_tokens_per_minute_keeps_the_tokens_at_or_under_the_limit() -> None:
    # Each request costs the server about 100 prompt tokens + max_tokens 4, and its answer uses all
    # of them. 120,000 a minute is 2,000 a second: about 19 requests.
    tpm = 120_000
    with RateLimitedServer(tokens_per_minute=tpm, burst_seconds=1.2, delay=0.05) as server:
        llm = openai(server, tokens_per_minute=tpm)
        generate(llm, 60, LONG, max_new_tokens=4)
        stats, times = server.stats(), answered(server)
    assert stats["rate_limited"] <= 1, stats
    tokens_a_second = (stats["tokens_charged"] - tpm / 60) / (times[-1] - times[0])
    assert 0.8 * tpm / 60 <= tokens_a_second <= SLACK * tpm / 60, f"{tokens_a_second:.0f} tokens a second"
    assert llm.limiter().describe().startswith(f"{tpm} tok/min (set)")


def test_tokens_per_minute_holds_when_answers_are_shorter_than_max_tokens() -> None:
    # The server charges 9 + 50 per request, the answers use 9 + 13: a refund of 37 each, and every
    # request after the first 16 is sent on the strength of the refunds before it.
    tpm = 120_000
    with RateLimitedServer(tokens_per_minute=tpm, burst_seconds=1.2, delay=0.05) as server:
        llm = openai(server, tokens_per_minute=tpm, max_concurrency=16, retry={"max_attempts": 30})
        generate(llm, 80, max_new_tokens=50)
        stats = server.stats()
    assert stats["rate_limited"] <= 2, stats


def test_llms_with_one_endpoint_key_and_model_share_one_limiter_and_stay_under_it_together() -> None:
    with RateLimitedServer(requests_per_minute=RPM, burst_seconds=1.2, delay=0.05) as server:
        first, second = openai(server, requests_per_minute=RPM), openai(server, requests_per_minute=RPM)
        assert first.limiter() is second.limiter()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:  # each LLM on its own loop, at once
            runs = [pool.submit(generate, llm, 30, prefix) for llm, prefix in ((first, "a"), (second, "b"))]
            for run in runs:
                run.result()
        stats, times = server.stats(), answered(server)
        other_key = openai(server, api_key="another key")
        other_model = openai(server, model="another model")
    assert stats["rate_limited"] <= 1, stats
    assert steady_rate(times, RPM / 60) <= SLACK * RPM / 60
    assert other_key.limiter() is not first.limiter() and other_model.limiter() is not first.limiter()
    assert other_key.limiter() is not other_model.limiter()
    assert "req/min" not in other_key.limiter().describe()  # none of the first ones' limit


def test_the_lowest_limit_any_sharer_set_is_the_one_in_force() -> None:
    with RateLimitedServer() as server:
        fast, slow = openai(server, requests_per_minute=6000), openai(server, requests_per_minute=600)
        assert fast.limiter() is slow.limiter()
        assert fast.limiter().describe() == "600 req/min (set)"


def test_two_steps_of_one_pipeline_share_one_limiter(tmp_path: Path) -> None:
    rows = [{"instruction": f"question number {i:03d}, please answer"} for i in range(30)]
    with RateLimitedServer(requests_per_minute=RPM, burst_seconds=1.2, delay=0.05) as server:
        steps = [
            get_task("text-generation", name=name, llm=openai(server, requests_per_minute=RPM))
            for name in ("first", "second")
        ]
        group = get_step("group-columns", name="group", columns=["generation"])
        result = Pipeline(steps >> group, source=rows, name="shared").run(output=tmp_path / "out", progress=None)
        stats, times = server.stats(), answered(server)
    assert result.stats.done == 30
    assert stats["answered"] == 60 and stats["rate_limited"] <= 1, stats
    assert steady_rate(times, RPM / 60) <= SLACK * RPM / 60
    first, second = result.stats.steps["first"].limiter, result.stats.steps["second"].limiter
    assert isinstance(first, Limiter) and first is second


def test_limits_reported_in_headers_are_adopted_when_none_is_set() -> None:
    delay = 0.05
    with RateLimitedServer(requests_per_minute=RPM, delay=delay) as server:
        llm = openai(server, max_concurrency=32, retry={"max_attempts": 30})
        generate(llm, 80)
        arrivals, times = server.arrivals(), answered(server)
    # The first 32 leave before any answer can say what the limit is: the server's 20 pass and the
    # rest are refused. From the first answer on, the client paces itself by the reported limit.
    informed = min(times) + delay
    later = [at for at, status in arrivals if status == 429 and at > informed]
    assert len(later) <= 2, f"{len(later)} refusals after the first answer"
    assert steady_rate(times, RPM / 60) <= SLACK * RPM / 60
    assert llm.limiter().describe().startswith(f"{RPM} req/min (reported)")


def test_adaptive_concurrency_backs_off_where_no_limit_is_known() -> None:
    # 100 a second, 10 at once, 100 ms an answer: about 10 in flight is all the server takes.
    # The first 64 requests leave before any answer in both modes (54 of them are refused); what
    # differs is what comes after.
    refused_later: dict[bool, int] = {}
    for adaptive in (True, False):
        forget_limiters()
        with RateLimitedServer(requests_per_minute=6000, burst_seconds=0.1, delay=0.1, limit_headers=False) as server:
            llm = openai(server, adaptive_concurrency=adaptive, retry={"max_attempts": 30})
            generate(llm, 150)
            arrivals = server.arrivals()
        refused_later[adaptive] = sum(1 for _, status in arrivals[llm.max_concurrency :] if status == 429)
        if adaptive:
            concurrency = llm.limiter().concurrency()
            assert concurrency is not None and concurrency < llm.max_concurrency
        else:
            assert llm.limiter().concurrency() is None
    assert refused_later[True] * 3 <= refused_later[False], refused_later


def test_retry_after_holds_back_every_new_request() -> None:
    # One request a second; the retry policy itself would retry at once (no backoff, Retry-After
    # ignored): only the limiter's pause keeps the retries from hammering the server.
    no_wait = RetryPolicy(max_attempts=5, initial_delay=0, max_retry_after=0)
    with RateLimitedServer(requests_per_minute=60, limit_headers=False) as server:
        generate(openai(server, retry=no_wait, max_concurrency=3), 3)
        stats, arrivals = server.stats(), server.arrivals()
    assert stats["answered"] == 3 and stats["rate_limited"] <= 4, stats
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(arrivals)]
    # Requests come in waves: those sent together, then none until the bucket has room again.
    assert all(gap < 0.05 or gap > 0.9 for gap in gaps), gaps
    assert arrivals[-1][0] - arrivals[0][0] >= 1.9


def test_the_hot_path_neither_waits_nor_estimates_tokens_when_no_limit_binds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The limiter's cost per request, structurally: its speed is measured in bench/rate_limits.py."""
    for rpm in (None, 10**9):
        limiter = Limiter("hot path")
        limiter.configure(rpm, None, 64, True)
        for _ in range(1000):
            coroutine = limiter.acquire(0)
            with pytest.raises(StopIteration) as finished:  # done at the first step: never suspended
                coroutine.send(None)
            limiter.release(finished.value.value, status=200)
        assert limiter.in_flight == 0 and limiter.requests_sent == 1000

    estimated: list[int] = []
    real_estimate = limits.estimate_tokens

    def counting(*args: Any, **kwargs: Any) -> int:
        estimated.append(1)
        return real_estimate(*args, **kwargs)

    monkeypatch.setattr("taskloom.llms.http.estimate_tokens", counting)
    with RateLimitedServer() as server:
        generate(openai(server, requests_per_minute=RPM), 5)
        assert not estimated, "tokens are estimated only for a tokens limit"
        generate(openai(server, model="other", tokens_per_minute=10**6), 5)
    assert len(estimated) == 5


@pytest.mark.parametrize("field", ["requests_per_minute", "tokens_per_minute"])
@pytest.mark.parametrize("value", [0, -5])
def test_a_limit_must_be_above_zero(field: str, value: int) -> None:
    with pytest.raises(ValidationError, match=field):
        get_llm("openai", model="m", base_url="http://127.0.0.1:9/v1", api_key="none", **{field: value})


class SharedBucket:
    """An allowance as a cluster keeps one (one bucket for several processes' limiters), in-process.

    ``taskloom-ray`` keeps it in an actor; here both limiters call it directly, which is what each
    of those processes does through Ray.
    """

    def __init__(self, per_minute: float) -> None:
        self.bucket = limits.Bucket(per_minute)
        self.grants = 0

    async def grant(self, which: str, amount: float) -> float:
        self.grants += 1
        import time

        return self.bucket.reserve(amount, time.monotonic())


def test_limiters_sharing_an_allowance_keep_its_limit_together_asking_for_it_in_chunks() -> None:
    # Two limiters as two worker processes have them (two keys here, since one process shares one
    # limiter per key), each set to the full limit: alone each would send the whole rate.
    with RateLimitedServer(requests_per_minute=int(RPM * 1.15), burst_seconds=1.2, delay=0.05) as server:
        shared = SharedBucket(RPM)
        first = openai(server, requests_per_minute=RPM, api_key="worker-1")
        second = openai(server, requests_per_minute=RPM, api_key="worker-2")
        assert first.limiter() is not second.limiter()
        for llm in (first, second):
            llm.limiter().share(shared)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda pair: generate(*pair), [(first, 40, "a"), (second, 40, "b")]))
        stats, times = server.stats(), answered(server)
    assert stats["rate_limited"] == 0, stats
    rate = steady_rate(times, RPM / 60)
    assert rate <= SLACK * RPM / 60, f"{rate:.1f} requests a second for {RPM / 60:.0f} allowed"
    # 20 a second, in chunks of a tenth of a second's worth: about one grant per 2 requests.
    assert shared.grants <= 80 / 2 + 4, shared.grants
