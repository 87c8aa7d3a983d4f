"""AnthropicLLM against a scripted loopback server: request mapping, structured output, failures.

Failures a real server will not produce on demand (429 with Retry-After, 500, 529, timeouts,
malformed bodies, 401) and forced tool calls (llama.cpp answers them in plain text with the
model we serve) are tested here.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import pickle
import subprocess
import sys
import time
from typing import Any

import pytest
from anthropic_scripted_http import Reply, ScriptedServer, error, message, tool_use
from pydantic import BaseModel
from taskloom_anthropic import AnthropicLLM
from taskloom_anthropic.llm import API_KEY_ENV, DEFAULT_MAX_NEW_TOKENS

from taskloom import get_llm
from taskloom.errors import (
    AuthenticationError,
    BadRequestError,
    OverloadedError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
)
from taskloom.retry import RetryPolicy

KEY = "sk-ant-test-0123456789-secret"
CHAT = [{"role": "user", "content": "Say hello."}]
FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02)


def make_llm(server: ScriptedServer, **fields: Any) -> AnthropicLLM:
    fields.setdefault("retry", FAST_RETRY)
    llm = AnthropicLLM(model="claude-test", base_url=server.url, api_key=KEY, **fields)
    llm.load()
    return llm


def run_one(llm: AnthropicLLM, chat: list[dict[str, str]] = CHAT, num_generations: int = 1, **kwargs: Any) -> Any:
    """One agenerate call on the LLM's own loop, without core's retries."""
    return llm.run_sync(llm.agenerate(chat, num_generations, **kwargs))


# -- what is sent ----------------------------------------------------------------------------------


def test_request_mapping() -> None:
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": "Bonjour."},
        {"role": "user", "content": "Again."},
    ]
    with ScriptedServer([message("Salut.", input_tokens=21, output_tokens=4)]) as server:
        llm = make_llm(server)
        try:
            out = run_one(llm, chat, temperature=0.3, top_p=0.9, max_new_tokens=33, stop=["\n\n", "END"])
        finally:
            llm.unload()
    assert out == {"generations": ["Salut."], "statistics": {"input_tokens": [21], "output_tokens": [4]}}
    [request] = server.requests
    assert request.path == "/v1/messages"
    assert request.headers["authorization"] == f"Bearer {KEY}"  # how the SDK 2.x sends a key
    assert request.body["model"] == "claude-test"
    assert request.body["system"] == "Be brief.\n\nAnswer in French."
    assert request.body["messages"] == [m for m in chat if m["role"] != "system"]
    assert request.body["max_tokens"] == 33
    assert request.body["temperature"] == 0.3
    assert request.body["top_p"] == 0.9
    assert request.body["stop_sequences"] == ["\n\n", "END"]
    assert "tools" not in request.body
    assert "tool_choice" not in request.body


def test_defaults_leave_sampling_to_the_api() -> None:
    with ScriptedServer([message()]) as server:
        llm = make_llm(server)
        try:
            run_one(llm)
        finally:
            llm.unload()
    body = server.requests[0].body
    assert body["max_tokens"] == DEFAULT_MAX_NEW_TOKENS
    assert "system" not in body
    for absent in ("temperature", "top_p", "stop_sequences", "seed"):
        assert absent not in body


def test_seed_is_ignored_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with ScriptedServer([message()]) as server:
        llm = make_llm(server)
        try:
            with caplog.at_level(logging.WARNING, logger="taskloom.anthropic"):
                run_one(llm, seed=7)
                run_one(llm, seed=7)
        finally:
            llm.unload()
    assert all("seed" not in r.body for r in server.requests)
    warnings = [r for r in caplog.records if "seed" in r.getMessage()]
    assert len(warnings) == 1


def test_num_generations_are_concurrent_calls_with_their_own_usage() -> None:
    script = [message("a", 10, 1), message("b", 10, 2), message("c", 10, 3)]
    with ScriptedServer(script) as server:
        llm = make_llm(server)
        try:
            out = run_one(llm, num_generations=3)
        finally:
            llm.unload()
    assert len(server.requests) == 3
    assert sorted(out["generations"]) == ["a", "b", "c"]
    # Each generation carries the usage of its own answer, whatever order they came back in.
    by_text = dict(zip(out["generations"], out["statistics"]["output_tokens"], strict=True))
    assert by_text == {"a": 1, "b": 2, "c": 3}
    assert out["statistics"]["input_tokens"] == [10, 10, 10]


def test_cached_prompt_tokens_count_as_input() -> None:
    reply = message(input_tokens=5, output_tokens=2, cache_read_input_tokens=100, cache_creation_input_tokens=7)
    with ScriptedServer([reply]) as server:
        llm = make_llm(server)
        try:
            out = run_one(llm)
        finally:
            llm.unload()
    assert out["statistics"] == {"input_tokens": [112], "output_tokens": [2]}


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, "sk-from-env")
    with ScriptedServer([message()]) as server:
        llm = AnthropicLLM(model="claude-test", base_url=server.url)
        assert "sk-from-env" not in json.dumps(llm.dump()) + repr(llm)
        llm.load()
        try:
            run_one(llm)
        finally:
            llm.unload()
    assert server.requests[0].headers["authorization"] == "Bearer sk-from-env"


# -- structured output through a forced tool call ---------------------------------------------------


class Answer(BaseModel):
    city: str
    population: int


def test_structured_output_from_pydantic_model() -> None:
    with ScriptedServer([tool_use("Answer", {"city": "Madrid", "population": 3300000})]) as server:
        llm = make_llm(server)
        try:
            out = run_one(llm, structured_output=Answer)
        finally:
            llm.unload()
    assert Answer.model_validate_json(out["generations"][0]) == Answer(city="Madrid", population=3300000)
    assert out["statistics"] == {"input_tokens": [40], "output_tokens": [12]}
    body = server.requests[0].body
    [tool] = body["tools"]
    assert tool["name"] == "Answer"
    assert tool["input_schema"] == Answer.model_json_schema()
    assert tool["description"]
    assert body["tool_choice"] == {"type": "tool", "name": "Answer"}


def test_structured_output_from_dict_schema_without_title() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    with ScriptedServer([tool_use("structured_output", {"ok": True})]) as server:
        llm = make_llm(server)
        try:
            out = run_one(llm, structured_output=schema)
        finally:
            llm.unload()
    assert json.loads(out["generations"][0]) == {"ok": True}
    body = server.requests[0].body
    assert body["tools"][0]["input_schema"] == schema
    assert body["tool_choice"] == {"type": "tool", "name": "structured_output"}


def test_structured_output_non_object_schema_is_wrapped_and_unwrapped() -> None:
    schema = {"type": "array", "items": {"type": "string"}}
    with ScriptedServer([tool_use("structured_output", {"value": ["a", "b"]})]) as server:
        llm = make_llm(server)
        try:
            out = run_one(llm, structured_output=schema)
        finally:
            llm.unload()
    assert json.loads(out["generations"][0]) == ["a", "b"]
    sent = server.requests[0].body["tools"][0]["input_schema"]
    assert sent["type"] == "object"
    assert sent["properties"]["value"] == schema


def test_structured_output_answered_in_text_keeps_the_text() -> None:
    with ScriptedServer([message('{"ok": true}')]) as server:
        llm = make_llm(server)
        try:
            out = run_one(llm, structured_output={"type": "object", "properties": {"ok": {"type": "boolean"}}})
        finally:
            llm.unload()
    assert out["generations"] == ['{"ok": true}']


# -- failures: retried ----------------------------------------------------------------------------


def test_rate_limit_waits_for_retry_after_then_succeeds() -> None:
    script = [error(429, "rate_limit_error", retry_after="1"), message("after the wait")]
    with ScriptedServer(script) as server:
        llm = make_llm(server)
        try:
            [out] = llm.generate([CHAT])
        finally:
            llm.unload()
    assert out["generations"] == ["after the wait"]
    assert len(server.requests) == 2
    waited = server.requests[1].at - server.requests[0].at
    assert waited >= 0.95, f"retried after {waited:.2f}s, before the server's Retry-After of 1 s"


def test_rate_limit_error_carries_retry_after() -> None:
    with ScriptedServer([error(429, "rate_limit_error", retry_after="7")]) as server:
        llm = make_llm(server)
        try:
            with pytest.raises(RateLimitError) as caught:
                run_one(llm)
        finally:
            llm.unload()
    assert caught.value.retry_after == 7.0
    assert caught.value.status == 429


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (error(500, "api_error"), ServerError),
        (error(502, "api_error"), ServerError),
        (error(529, "overloaded_error"), OverloadedError),
        (error(503, "overloaded_error"), OverloadedError),
        (Reply(status=200, body=b'{"type": "message", "content": [tru'), ServerError),
        (Reply(status=200, body=b"<html>not json</html>", content_type="text/html"), ServerError),
        (Reply(status=200, body={"unexpected": "shape"}), ServerError),
    ],
    ids=["500", "502", "529", "503", "malformed-json", "not-json", "not-a-message"],
)
def test_transient_failures_are_retried(reply: Reply, expected: type[Exception]) -> None:
    with ScriptedServer([reply, message("recovered")]) as server:
        llm = make_llm(server)
        try:
            with pytest.raises(expected):
                run_one(llm)  # one attempt, no core retry: the error class itself
            [out] = llm.generate([CHAT])  # a fresh attempt succeeds: script is now past the failure
        finally:
            llm.unload()
    assert out["generations"] == ["recovered"]
    assert len(server.requests) == 2


@pytest.mark.parametrize("reply", [error(500, "api_error"), error(529, "overloaded_error")], ids=["500", "529"])
def test_failure_retried_by_core_until_success(reply: Reply) -> None:
    with ScriptedServer([reply, reply, message("third time")]) as server:
        llm = make_llm(server)
        try:
            [out] = llm.generate([CHAT])
        finally:
            llm.unload()
    assert out["generations"] == ["third time"]
    assert len(server.requests) == 3


def test_persistent_overload_is_recorded_on_the_row() -> None:
    with ScriptedServer([error(529, "overloaded_error", "Overloaded")]) as server:
        llm = make_llm(server)
        try:
            [out] = llm.generate([CHAT])
        finally:
            llm.unload()
    assert len(server.requests) == FAST_RETRY.max_attempts
    assert out["generations"] == [None]
    assert "OverloadedError" in (out.get("error") or "")
    assert "529" in (out.get("error") or "")


def test_timeout_is_retried() -> None:
    script = [Reply(body=message().body, delay=1.5), message("fast now")]
    with ScriptedServer(script) as server:
        llm = make_llm(server, timeout=0.3)
        try:
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError):
                run_one(llm)
            assert time.monotonic() - started < 1.2
            [out] = llm.generate([CHAT])
        finally:
            llm.unload()
    assert out["generations"] == ["fast now"]
    assert len(server.requests) == 2


def test_connection_refused_is_a_server_error() -> None:
    with ScriptedServer([message()]) as server:
        url = server.url
    llm = AnthropicLLM(model="claude-test", base_url=url, api_key=KEY, retry=FAST_RETRY)
    llm.load()
    try:
        with pytest.raises(ServerError):
            run_one(llm)
    finally:
        llm.unload()


# -- failures: not retried ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_authentication_error_stops_the_run_without_the_key(status: int) -> None:
    kind = "authentication_error" if status == 401 else "permission_error"
    with ScriptedServer([error(status, kind, f"invalid x-api-key {KEY}")]) as server:
        llm = make_llm(server)
        try:
            with pytest.raises(AuthenticationError) as caught:
                llm.generate([CHAT, CHAT], num_generations=2)
        finally:
            llm.unload()
    text = str(caught.value)
    assert KEY not in text
    assert "***" in text
    assert API_KEY_ENV in text
    assert str(status) in text
    assert len(server.requests) <= 4  # never retried: at most the requests already in flight


@pytest.mark.parametrize("status", [400, 404, 422])
def test_bad_request_is_recorded_on_the_row_and_not_retried(status: int) -> None:
    with ScriptedServer([error(status, "invalid_request_error", f"prompt too long; key was {KEY}")]) as server:
        llm = make_llm(server)
        try:
            with pytest.raises(BadRequestError):
                run_one(llm)
            [out] = llm.generate([CHAT])
        finally:
            llm.unload()
    assert len(server.requests) == 2  # one per call, no retry
    assert out["generations"] == [None]
    assert "prompt too long" in out["error"]
    assert KEY not in out["error"]


def test_one_failing_generation_fails_the_input() -> None:
    with ScriptedServer([message("fine"), error(400, "invalid_request_error")]) as server:
        llm = make_llm(server)
        try:
            with pytest.raises(BadRequestError):
                run_one(llm, num_generations=2)
        finally:
            llm.unload()


# -- keys, loading, plugin ------------------------------------------------------------------------


def test_missing_key_fails_at_load_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    llm = AnthropicLLM(model="claude-test")
    with pytest.raises(AuthenticationError, match=API_KEY_ENV):
        llm.load()


def test_registered_under_its_entry_point() -> None:
    llm = get_llm("anthropic", model="claude-test", api_key=KEY)
    assert isinstance(llm, AnthropicLLM)
    assert llm.dump()["type"] == "anthropic"
    assert KEY not in json.dumps(llm.dump())


def test_plugin_module_does_not_import_the_sdk() -> None:
    code = (
        "import sys, taskloom_anthropic.plugin, taskloom_anthropic;"
        "print('anthropic' in sys.modules, 'httpx2' in sys.modules, 'httpx' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False", "False"]


def test_clients_are_per_event_loop_and_closed_on_unload() -> None:
    with ScriptedServer([message("one")]) as server:
        llm = make_llm(server)
        try:
            run_one(llm)

            async def elsewhere() -> Any:
                return await llm.agenerate_batch([CHAT])

            [out] = asyncio.run(elsewhere())  # the caller's own loop gets its own client
            assert out["generations"] == ["one"]
            assert len(llm._clients) >= 1
        finally:
            llm.unload()
        assert len(llm._clients) == 0
        assert len(server.requests) == 2


def test_changed_settings_get_a_new_client() -> None:
    with ScriptedServer([message("first")]) as first, ScriptedServer([message("second")]) as second:
        llm = make_llm(first)
        try:
            assert run_one(llm)["generations"] == ["first"]
            llm.base_url = second.url
            llm.api_key = "sk-rotated"  # type: ignore[assignment]  # validated into a SecretStr
            assert run_one(llm)["generations"] == ["second"]
        finally:
            llm.unload()
    assert len(first.requests) == 1
    assert len(second.requests) == 1
    assert second.requests[0].headers["authorization"] == "Bearer sk-rotated"


def test_copies_and_pickles_start_without_clients() -> None:
    with ScriptedServer([message("hi")]) as server:
        llm = make_llm(server)
        try:
            run_one(llm)
            assert len(llm._clients) == 1
            for other in (pickle.loads(pickle.dumps(llm)), copy.deepcopy(llm), llm.model_copy()):
                assert len(other._clients) == 0
                assert other.dump() == llm.dump()
        finally:
            llm.unload()
