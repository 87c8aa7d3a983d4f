"""HTTPLLM, the one HTTP provider base: what every provider gets without writing it.

Scripted HTTP (taskloom.testing.http.ScriptedServer) on loopback, because these are the answers a
real server will not give on demand: 429s with Retry-After, 500s, 401, bodies that are not JSON,
fewer choices than asked. The success path of real providers runs against llama-server in their
own tests.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from pydantic import Field

from taskloom import TextGeneration
from taskloom.errors import AuthenticationError
from taskloom.plugin import HTTPLLM, ChatType, GenerationOptions, Reply
from taskloom.retry import RetryPolicy
from taskloom.testing.http import Reply as HTTPReply
from taskloom.testing.http import ScriptedServer

CHAT: ChatType = [{"role": "user", "content": "Say hi."}]
KEY = "sk-test-0123456789-secret"


def completion(*texts: str, prompt: int = 10, completion: int = 7) -> dict[str, Any]:
    choices = [{"index": i, "message": {"content": text}} for i, text in enumerate(texts)]
    return {"choices": choices, "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}


class Tiny(HTTPLLM):
    """A provider of an OpenAI-like API, as small as one can be."""

    registry_name: ClassVar[str | None] = None
    api_key_env: ClassVar[str | None] = "TINY_API_KEY"
    choices: int = Field(default=1, description="Answers one request may ask for.")

    class Options(GenerationOptions):
        pass

    @property
    def model_name(self) -> str:
        return "tiny"

    def choices_per_request(self) -> int:
        return self.choices

    def body(self, input: ChatType, options: Any, n: int) -> dict[str, Any]:
        return {"messages": input, "n": n, "temperature": options.temperature}

    def parse(self, body: Any, options: Any) -> Reply:
        usage = body.get("usage") or {}
        texts = [c["message"]["content"] for c in body["choices"]]
        return Reply(texts, usage.get("prompt_tokens"), usage.get("completion_tokens"))


FAST = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as scripted:
        yield scripted


def tiny(server: ScriptedServer, **fields: Any) -> Tiny:
    return Tiny(**{"base_url": server.url, "api_key": KEY, "retry": FAST, **fields})


def test_the_key_comes_from_the_field_or_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINY_API_KEY", raising=False)
    with pytest.raises(AuthenticationError, match="TINY_API_KEY"):
        Tiny().load()
    monkeypatch.setenv("TINY_API_KEY", "from-env")
    llm = Tiny()
    llm.load()
    assert llm.headers("from-env") == {"Authorization": "Bearer from-env"}
    assert "from-env" not in repr(llm) + str(llm.dump())


def test_posts_the_body_and_reads_the_answer(server: ScriptedServer) -> None:
    server.answer(HTTPReply(body=completion("hi")))
    llm = tiny(server, generation_kwargs={"temperature": 0.5})
    [output] = llm.generate([CHAT])
    llm.unload()
    assert output["generations"] == ["hi"]
    assert output["statistics"] == {"input_tokens": [10], "output_tokens": [7]}
    [request] = server.requests
    assert request.path == "/chat/completions"
    assert request.body == {"messages": CHAT, "n": 1, "temperature": 0.5}
    assert request.headers["authorization"] == f"Bearer {KEY}"


def test_rate_limits_are_retried_honouring_retry_after(server: ScriptedServer) -> None:
    server.answer(
        HTTPReply(429, {"error": {"message": "slow down"}}, headers={"retry-after": "0.2"}),
        HTTPReply(body=completion("at last")),
    )
    llm = tiny(server)
    retries: list[float] = []

    async def one() -> Any:
        try:
            return await llm.agenerate_one(CHAT, 1, on_retry=lambda error, attempt, wait: retries.append(wait))
        finally:
            await llm.aclose()

    llm.load()
    output = asyncio.run(one())
    assert output["generations"] == ["at last"]
    assert retries and retries[0] >= 0.2, "the wait the server asked for"
    assert server.requests[1].at - server.requests[0].at >= 0.2


def test_one_failed_request_among_n_fails_only_its_generation(server: ScriptedServer) -> None:
    count = itertools.count()
    lock = threading.Lock()

    def answer(body: Any) -> HTTPReply:
        with lock:
            number = next(count)
        if number == 1:
            return HTTPReply(400, {"error": {"message": "this one is refused"}})
        return HTTPReply(body=completion(f"text {number}"))

    server.answer(answer)
    llm = tiny(server)
    [output] = llm.generate([CHAT], num_generations=3)
    llm.unload()
    assert len(server.requests) == 3, "a request refused for good is not retried; the others are not re-sent"
    errors = output.get("errors") or []
    failed = [i for i, e in enumerate(errors) if e]
    assert len(failed) == 1 and "this one is refused" in str(errors[failed[0]])
    assert output["generations"][failed[0]] is None
    assert sum(text is not None for text in output["generations"]) == 2

    task = TextGeneration(llm=tiny(server), num_generations=3)
    count = itertools.count()
    task.load()
    rows = next(task.process([{"instruction": "x"}]))
    task.unload()
    assert len(rows) == 3
    failed_rows = [r for r in rows if "error_text-generation" in r["distilabel_metadata"]]
    assert len(failed_rows) == 1 and failed_rows[0]["generation"] is None
    assert all(r["generation"] for r in rows if r not in failed_rows), "the generations that worked are kept"


def test_several_choices_per_request_fill_up_when_the_server_gives_fewer(server: ScriptedServer) -> None:
    server.answer(HTTPReply(body=completion("one", completion=9)), HTTPReply(body=completion("more", completion=4)))
    llm = tiny(server, choices=3)
    [output] = llm.generate([CHAT], num_generations=3)
    llm.unload()
    assert server.requests[0].body["n"] == 3
    assert [r.body["n"] for r in server.requests[1:]] == [1, 1]
    assert output["generations"] == ["one", "more", "more"]
    assert output["statistics"]["output_tokens"] == [9, 4, 4]


def test_counts_of_a_multi_choice_answer_are_split_over_its_choices(server: ScriptedServer) -> None:
    server.answer(HTTPReply(body=completion("a", "b", prompt=10, completion=7)))
    llm = tiny(server, choices=2)
    [output] = llm.generate([CHAT], num_generations=2)
    llm.unload()
    assert output["statistics"] == {"input_tokens": [5, 5], "output_tokens": [4, 3]}


@pytest.mark.parametrize(
    "reply",
    [
        HTTPReply(500, "internal error"),
        HTTPReply(200, "<html>not json</html>", content_type="text/html"),
        HTTPReply(200, {"unexpected": True}),
        HTTPReply(200, {"choices": []}),
    ],
    ids=["500", "not-json", "wrong-shape", "no-choices"],
)
def test_server_errors_and_garbage_are_retried_then_recorded(server: ScriptedServer, reply: HTTPReply) -> None:
    server.answer(reply)
    llm = tiny(server)
    [output] = llm.generate([CHAT])
    llm.unload()
    assert len(server.requests) == FAST.max_attempts
    assert output["generations"] == [None]
    assert "ServerError" in str(output["error"])


def test_the_key_never_shows_in_an_error(server: ScriptedServer, caplog: pytest.LogCaptureFixture) -> None:
    server.answer(HTTPReply(400, {"error": {"message": f"bad key {KEY} given"}}))
    llm = tiny(server)
    [output] = llm.generate([CHAT])
    llm.unload()
    assert KEY not in str(output) and KEY not in caplog.text
    assert "***" in str(output["error"])


def test_a_bad_key_stops_the_batch(server: ScriptedServer) -> None:
    server.answer(HTTPReply(401, {"error": {"message": "invalid key"}}))
    llm = tiny(server)
    with pytest.raises(AuthenticationError, match="TINY_API_KEY"):
        llm.generate([CHAT] * 3)
    llm.unload()


def test_a_timeout_is_a_retried_timeout_error(server: ScriptedServer) -> None:
    server.answer(HTTPReply(body=completion("late"), delay=1.0))
    llm = tiny(server, timeout=0.2, retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
    [output] = llm.generate([CHAT])
    llm.unload()
    assert len(server.requests) == 2
    assert "RequestTimeoutError" in str(output["error"])


def test_one_session_per_event_loop_closed_by_aclose(server: ScriptedServer) -> None:
    server.answer(HTTPReply(body=completion("hi")))
    llm = tiny(server)
    llm.load()

    async def twice() -> Any:
        first = llm.session()
        await llm.agenerate_batch([CHAT, CHAT])
        assert llm.session() is first, "one session per loop, reused"
        await llm.aclose()
        assert first.closed
        return first

    one = asyncio.run(twice())
    two = asyncio.run(twice())
    assert one is not two, "a new loop gets its own session"
    llm.generate([CHAT])  # the sync facade's loop has one too, closed by unload
    [(_, facade)] = llm._sessions.by_loop.items()
    llm.unload()
    assert facade.closed


def test_a_shallow_copy_gets_its_own_loop_and_sessions(server: ScriptedServer) -> None:
    server.answer(HTTPReply(body=completion("hi")))
    llm = tiny(server)
    llm.generate([CHAT])
    copy = llm.model_copy(update={"timeout": 5.0})
    assert copy._runner is None and not copy._sessions.by_loop
    assert copy.generate([CHAT])[0]["generations"] == ["hi"]
    copy.unload()
    assert llm.generate([CHAT])[0]["generations"] == ["hi"], "unloading the copy left the original working"
    llm.unload()


def test_separate_requests_for_seeded_generations_carry_seed_plus_index(server: ScriptedServer) -> None:
    server.answer(lambda body: HTTPReply(body=completion(f"seed {body['seed']}")))

    class Seeded(Tiny):
        def body(self, input: ChatType, options: Any, n: int) -> dict[str, Any]:
            return {**super().body(input, options, n), "seed": options.seed}

    llm = Seeded(base_url=server.url, api_key=KEY, retry=FAST)
    [output] = llm.generate([CHAT], num_generations=3, seed=40)
    [unseeded] = llm.generate([CHAT], num_generations=2)
    llm.unload()
    assert output["generations"] == ["seed 40", "seed 41", "seed 42"]
    assert unseeded["generations"] == ["seed None", "seed None"]
