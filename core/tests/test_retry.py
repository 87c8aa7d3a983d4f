"""The retry policy every provider gets: what is retried, how long it waits, when it stops."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from taskloom import TextGeneration
from taskloom.errors import (
    AuthenticationError,
    BadRequestError,
    GenerationError,
    OverloadedError,
    RateLimitError,
    ServerError,
)
from taskloom.retry import RetryPolicy
from taskloom.testing import ScriptedAsyncLLM
from taskloom.typing import ChatType


def run_policy(policy: RetryPolicy, failures: list[Exception]) -> tuple[Any, list[float]]:
    waits: list[float] = []
    calls = iter([*failures, None])

    async def attempt() -> str:
        error = next(calls)
        if error is not None:
            raise error
        return "done"

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return asyncio.run(policy.run(attempt, sleep=sleep)), waits


def test_transient_errors_are_retried_until_success() -> None:
    result, waits = run_policy(RetryPolicy(), [RateLimitError("429"), ServerError("500"), OverloadedError("529")])
    assert result == "done"
    assert len(waits) == 3


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(initial_delay=0.01, max_retry_after=30)
    _, waits = run_policy(policy, [RateLimitError("429", retry_after=7), RateLimitError("429", retry_after=999)])
    assert waits == [7, 30]


def test_backoff_grows_exponentially_with_full_jitter() -> None:
    policy = RetryPolicy(initial_delay=1, multiplier=2, max_delay=10)
    rng = random.Random(0)
    samples = {retry: [policy.delay(retry, rng=rng) for _ in range(500)] for retry in (1, 2, 3, 6)}
    assert min(samples[1]) >= 0 and max(samples[1]) <= 1
    assert max(samples[2]) <= 2 and max(samples[2]) > 1.5
    assert max(samples[3]) <= 4 and max(samples[3]) > 3
    assert max(samples[6]) <= 10 and max(samples[6]) > 9  # capped by max_delay


def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    with pytest.raises(ServerError, match="third") as caught:
        run_policy(RetryPolicy(max_attempts=3), [ServerError("first"), ServerError("second"), ServerError("third")])
    assert caught.value.attempts == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize("error", [BadRequestError("400"), AuthenticationError("401"), ValueError("bug")])
def test_other_errors_are_not_retried(error: Exception) -> None:
    with pytest.raises(type(error)):
        run_policy(RetryPolicy(), [error])


def test_async_llm_retries_then_records_what_still_fails_on_its_row() -> None:
    attempts: dict[str, int] = {}

    def reply(chat: ChatType, index: int) -> Any:
        text = chat[-1]["content"]
        attempts[text] = attempts.get(text, 0) + 1
        if text == "flaky" and attempts[text] < 3:
            return RateLimitError("429 slow down", retry_after=0)
        if text == "down":
            return ServerError("500 internal error")
        if text == "invalid":
            return BadRequestError("400 prompt too long")
        return "ok"

    llm = ScriptedAsyncLLM(reply=reply, retry=RetryPolicy(max_attempts=4, initial_delay=0.001))
    task = TextGeneration(llm=llm)
    task.load()
    rows = next(task.process([{"instruction": t} for t in ("fine", "flaky", "down", "invalid")]))
    task.unload()
    assert [r["generation"] for r in rows] == ["ok", "ok", None, None]
    assert attempts == {"fine": 1, "flaky": 3, "down": 4, "invalid": 1}
    assert "500 internal error" in rows[2]["distilabel_metadata"]["error_text-generation"]
    assert "400 prompt too long" in rows[3]["distilabel_metadata"]["error_text-generation"]


def test_authentication_error_stops_the_run() -> None:
    llm = ScriptedAsyncLLM(replies=[AuthenticationError("401: check OPENAI_API_KEY")])
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
        llm.generate([[{"role": "user", "content": "x"}]])
    llm.unload()


def test_retry_errors_are_generation_errors() -> None:
    assert issubclass(RateLimitError, GenerationError)
    assert not issubclass(AuthenticationError, GenerationError)


def test_a_paced_retry_waits_only_what_the_server_asked() -> None:
    policy = RetryPolicy(initial_delay=10, max_retry_after=5)
    assert policy.delay(3, 0.25, paced=True) == 0.25
    assert policy.delay(3, None, paced=True) == 0.0
    assert policy.delay(3, 60, paced=True) == 5  # still capped
