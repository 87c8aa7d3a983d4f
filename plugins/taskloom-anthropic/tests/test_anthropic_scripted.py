"""AnthropicLLM against a scripted loopback server: request mapping, structured output, failures.

Failures a real server will not produce on demand (429 with Retry-After, 500, 529, timeouts,
malformed bodies, 401) and forced tool calls (llama.cpp answers them in plain text with the
model we serve) are tested here; the success paths also run against llama-server.
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
from taskloom_anthropic.llm import API_KEY_ENV, API_VERSION, DEFAULT_MAX_NEW_TOKENS

from taskloom import get_llm
from taskloom.errors import (
    AuthenticationError,
    BadRequestError,
    OverloadedError,
    RateLimitError,
    RequestTimeoutError,
    RetryableError,
    ServerError,
)
from taskloom.plugin import OptionError
from taskloom.retry import NO_RETRY, RetryPolicy
from taskloom.testing.conformance import LLMConformance

KEY = "sk-ant-test-0123456789-secret"
CHAT = [{"role": "user", "content": "Say hello."}]
FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02)


def make_llm(server: ScriptedServer, **fields: Any) -> AnthropicLLM:
    fields.setdefault("retry", FAST_RETRY)
    llm = AnthropicLLM(model="claude-test", base_url=server.url, api_key=KEY, **fields)
    llm.load()
    return llm


def run_one(
    llm: AnthropicLLM,
    chat: list[dict[str, str]] = CHAT,
    num_generations: int = 1,
    retried: list[RetryableError] | None = None,
    **kwargs: Any,
) -> Any:
    """One input through core's per-row path; every error that led to a retry lands in ``retried``."""

    def on_retry(error: RetryableError, attempt: int, wait: float) -> None:
        if retried is not None:
            retried.append(error)

    return llm.run_sync(llm.agenerate_one(chat, num_generations, on_retry=on_retry, **kwargs))


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
            out = run_one(llm, chat, temperature=0.3, top_p=0.9, top_k=40, max_new_tokens=33, stop=["\n\n", "END"])
        finally:
            llm.unload()
    assert out == {"generations": ["Salut."], "statistics": {"input_tokens": [21], "output_tokens": [4]}}
    [request] = server.requests
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == API_VERSION == "2023-06-01"
    assert "authorization" not in request.headers  # Anthropic's own header, not a Bearer token
    assert request.body == {
        "model": "claude-test",
        "system": "Be brief.\n\nAnswer in French.",
        "messages": [m for m in chat if m["role"] != "system"],
        "max_tokens": 33,
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 40,
        "stop_sequences": ["\n\n", "END"],
    }


def test_defaults_leave_sampling_to_the_api() -> None:
    with ScriptedServer([message()]) as server:
        llm = make_llm(server)
        try:
            run_one(llm)
            run_one(llm, max_new_tokens=None)  # None is the provider's default, and the API needs one
        finally:
            llm.unload()
    for request in server.requests:
        assert request.body == {"model": "claude-test", "messages": CHAT, "max_tokens": DEFAULT_MAX_NEW_TOKENS}


def test_generation_kwargs_are_sent() -> None:
    with ScriptedServer([message()]) as server:
        llm = make_llm(server, generation_kwargs={"temperature": 0, "max_new_tokens": 7})
        try:
            [out] = llm.generate([CHAT], top_k=3)
        finally:
            llm.unload()
    assert out["generations"] == ["Hello there."]
    body = server.requests[0].body
    assert (body["temperature"], body["max_tokens"], body["top_k"]) == (0, 7, 3)


@pytest.mark.parametrize(
    ("option", "value"),
    [("temperature", 1.5), ("temperature", -0.1), ("top_k", 0), ("top_p", 0), ("max_new_tokens", 0), ("n", 2)],
)
def test_options_out_of_range_are_refused_before_any_request(option: str, value: Any) -> None:
    with ScriptedServer([message()]) as server:
        llm = make_llm(server)
        try:
            with pytest.raises(OptionError, match=option):
                llm.generate([CHAT], **{option: value})
            with pytest.raises(ValueError, match=option):  # pydantic's wrapper around the OptionError
                AnthropicLLM(model="claude-test", generation_kwargs={option: value})
        finally:
            llm.unload()
    assert server.requests == []


def test_options_are_documented() -> None:
    info = {o["name"]: o for o in AnthropicLLM.options_info()}
    assert info["max_new_tokens"]["default"] == DEFAULT_MAX_NEW_TOKENS
    assert info["temperature"]["range"] == ">= 0, <= 1"
    assert info["top_k"]["range"] == ">= 1"
    assert "no seed" in info["seed"]["description"]
    assert all(o["description"] for o in info.values())


def test_seed_is_ignored_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with ScriptedServer([message()]) as server:
        llm = make_llm(server)
        try:
            with caplog.at_level(logging.WARNING, logger="taskloom.anthropic"):
                run_one(llm, seed=7)
                run_one(llm, CHAT, 2, seed=7)
        finally:
            llm.unload()
    assert len(server.requests) == 3
    assert all("seed" not in r.body for r in server.requests)
    warnings = [r for r in caplog.records if "seed" in r.getMessage()]
    assert len(warnings) == 1


def test_num_generations_are_one_request_each_with_their_own_usage() -> None:
    script = [message("a", 10, 1), message("b", 10, 2), message("c", 10, 3)]
    with ScriptedServer(script) as server:
        llm = make_llm(server)
        try:
            out = run_one(llm, num_generations=3)
        finally:
            llm.unload()
    assert len(server.requests) == 3
    assert all("n" not in r.body for r in server.requests)
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
    # All of them are input; the ones read from the prompt cache are also reported apart (priced lower).
    assert out["statistics"] == {"input_tokens": [112], "output_tokens": [2], "cached_input_tokens": 100}


def test_text_blocks_are_joined_and_other_blocks_skipped() -> None:
    body = message().body
    assert isinstance(body, dict)
    body["content"] = [
        {"type": "thinking", "thinking": "hmm", "signature": "x"},
        {"type": "text", "text": "Hello, "},
        {"type": "text", "text": "world."},
    ]
    with ScriptedServer([Reply(body=body)]) as server:
        llm = make_llm(server)
        try:
            out = run_one(llm)
        finally:
            llm.unload()
    assert out["generations"] == ["Hello, world."]


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
    assert server.requests[0].headers["x-api-key"] == "sk-from-env"


# -- structured output through a forced tool call ---------------------------------------------------


class Answer(BaseModel):
    city: str
    population: int


class Cities(BaseModel):
    items: list[Answer]


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


def test_structured_output_title_is_made_a_valid_tool_name() -> None:
    schema = {"title": "My answer (v2)", "type": "object", "properties": {}}
    with ScriptedServer([tool_use("My_answer__v2_", {})]) as server:
        llm = make_llm(server)
        try:
            out = run_one(llm, structured_output=schema)
        finally:
            llm.unload()
    assert out["generations"] == ["{}"]
    assert server.requests[0].body["tool_choice"]["name"] == "My_answer__v2_"


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
    assert sent == {"type": "object", "properties": {"value": schema}, "required": ["value"]}


def test_wrapped_schema_keeps_its_definitions_at_the_root() -> None:
    schema = {"type": "array", "items": {"$ref": "#/$defs/Answer"}, "$defs": {"Answer": Answer.model_json_schema()}}
    arguments = {"value": [{"city": "Lima", "population": 10}]}
    with ScriptedServer([tool_use("structured_output", arguments)]) as server:
        llm = make_llm(server)
        try:
            out = run_one(llm, structured_output=schema)
        finally:
            llm.unload()
    assert json.loads(out["generations"][0]) == arguments["value"]
    sent = server.requests[0].body["tools"][0]["input_schema"]
    assert sent["$defs"] == schema["$defs"]
    assert sent["properties"]["value"] == {"type": "array", "items": {"$ref": "#/$defs/Answer"}}


def test_an_object_schema_with_a_value_property_is_not_unwrapped() -> None:
    schema = {"type": "object", "properties": {"value": {"type": "integer"}}}
    with ScriptedServer([tool_use("structured_output", {"value": 3})]) as server:
        llm = make_llm(server)
        try:
            out = run_one(llm, structured_output=schema)
        finally:
            llm.unload()
    assert json.loads(out["generations"][0]) == {"value": 3}


def test_structured_output_answered_in_text_keeps_the_text() -> None:
    with ScriptedServer([message('{"ok": true}')]) as server:
        llm = make_llm(server)
        try:
            out = run_one(llm, structured_output={"type": "object", "properties": {"ok": {"type": "boolean"}}})
        finally:
            llm.unload()
    assert out["generations"] == ['{"ok": true}']


def test_concurrent_inputs_with_different_schemas_each_read_their_own_tool() -> None:
    def answer(body: dict[str, Any]) -> Reply:
        name = body["tool_choice"]["name"]
        return tool_use(name, {"value": [1, 2]} if name == "structured_output" else {"city": "Oslo", "population": 1})

    with ScriptedServer([answer]) as server:
        llm = make_llm(server)
        schemas = [{"type": "array", "items": {"type": "integer"}}, Answer] * 4

        async def both() -> list[Any]:
            return await asyncio.gather(*(llm.agenerate_one(CHAT, 1, structured_output=s) for s in schemas))

        try:
            outputs = llm.run_sync(both())
        finally:
            llm.unload()
    texts = [json.loads(o["generations"][0]) for o in outputs]
    assert texts == [[1, 2], {"city": "Oslo", "population": 1}] * 4


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
    retried: list[RetryableError] = []
    with ScriptedServer([error(429, "rate_limit_error", retry_after="0.05"), message()]) as server:
        llm = make_llm(server)
        try:
            out = run_one(llm, retried=retried)
        finally:
            llm.unload()
    assert out["generations"] == ["Hello there."]
    [failure] = retried
    assert isinstance(failure, RateLimitError)
    assert failure.retry_after == 0.05
    assert failure.status == 429
    assert "rate_limit_error" in str(failure)


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
        (Reply(status=200, body=["a", "list"]), ServerError),
        (Reply(status=200, body={"content": "not blocks", "usage": {"output_tokens": 1}}), ServerError),
        (Reply(status=200, body={"content": ["not a block"], "usage": {"output_tokens": 1}}), ServerError),
        (Reply(status=200, body={"content": [], "usage": []}), ServerError),
        (Reply(status=200, body={"content": [], "usage": {"input_tokens": 3}}), ServerError),
    ],
    ids=[
        "500",
        "502",
        "529",
        "503",
        "malformed-json",
        "not-json",
        "not-a-message",
        "a-list",
        "content-not-a-list",
        "block-not-an-object",
        "usage-not-an-object",
        "no-output-tokens",
    ],
)
def test_transient_failures_are_retried(reply: Reply, expected: type[Exception]) -> None:
    retried: list[RetryableError] = []
    with ScriptedServer([reply, message("recovered")]) as server:
        llm = make_llm(server)
        try:
            out = run_one(llm, retried=retried)
        finally:
            llm.unload()
    assert out["generations"] == ["recovered"]
    assert len(server.requests) == 2
    assert [type(e) for e in retried] == [expected]


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
    assert out["error"].startswith("OverloadedError")
    assert "529" in out["error"]
    assert "overloaded_error: Overloaded" in out["error"]


def test_timeout_is_retried() -> None:
    retried: list[RetryableError] = []
    script = [Reply(body=message().body, delay=1.5), message("fast now")]
    with ScriptedServer(script) as server:
        llm = make_llm(server, timeout=0.3)
        try:
            started = time.monotonic()
            out = run_one(llm, retried=retried)
            elapsed = time.monotonic() - started
        finally:
            llm.unload()
    assert out["generations"] == ["fast now"]
    assert [type(e) for e in retried] == [RequestTimeoutError]
    assert elapsed < 1.2, "the first request was not cut off at the timeout"
    assert len(server.requests) == 2


def test_connection_refused_is_a_server_error_on_the_row() -> None:
    with ScriptedServer([message()]) as server:
        url = server.url
    llm = AnthropicLLM(model="claude-test", base_url=url, api_key=KEY, retry=NO_RETRY)
    llm.load()
    try:
        [out] = llm.generate([CHAT])
    finally:
        llm.unload()
    assert out["generations"] == [None]
    assert out["error"].startswith("ServerError")


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
    assert kind in text
    assert len(server.requests) <= 4  # never retried: at most the requests already in flight


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_bad_request_is_recorded_on_the_row_and_not_retried(status: int) -> None:
    with ScriptedServer([error(status, "invalid_request_error", f"prompt too long; key was {KEY}")]) as server:
        llm = make_llm(server)
        try:
            [out] = llm.generate([CHAT])
        finally:
            llm.unload()
    assert len(server.requests) == 1
    assert out["generations"] == [None]
    assert out["error"].startswith(BadRequestError.__name__)
    assert "invalid_request_error: prompt too long" in out["error"]
    assert KEY not in out["error"]


def test_an_error_body_of_another_shape_is_still_shown() -> None:
    with ScriptedServer([Reply(status=400, body={"error": {"message": "bad things"}})]) as server:
        llm = make_llm(server)
        try:
            [out] = llm.generate([CHAT])
        finally:
            llm.unload()
    assert "bad things" in out["error"]


@pytest.mark.parametrize(
    "failure",
    [error(400, "invalid_request_error", "too long"), error(529, "overloaded_error", "Overloaded")],
    ids=["400", "529-for-good"],
)
def test_a_generation_that_failed_for_good_keeps_its_error_and_the_others_their_text(failure: Reply) -> None:
    # The first two requests succeed; every later one (the third and its retries) fails.
    with ScriptedServer([message("a", 10, 1), message("b", 10, 2), failure]) as server:
        llm = make_llm(server)
        try:
            [out] = llm.generate([CHAT], num_generations=3)
        finally:
            llm.unload()
    generations = out["generations"]
    assert sorted(g for g in generations if g is not None) == ["a", "b"]
    failed = generations.index(None)
    errors = out["errors"]
    assert errors[failed] is not None and "HTTP " in errors[failed]
    assert [e for i, e in enumerate(errors) if i != failed] == [None, None]
    assert "error" not in out  # the input as a whole did not fail
    assert out["statistics"]["output_tokens"][failed] == 0
    assert sorted(out["statistics"]["output_tokens"]) == [0, 1, 2]


def test_the_key_never_appears_in_messages_logs_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    echo = f"your key {KEY} is fine"
    script = [
        error(500, "api_error", echo),
        Reply(status=200, body={"content": echo, "usage": {"output_tokens": 1}}),
        Reply(status=200, body=f"<html>{echo}</html>", content_type="text/html"),
        error(400, "invalid_request_error", echo),
    ]
    with ScriptedServer(script) as server:
        llm = make_llm(server, retry=RetryPolicy(max_attempts=4, initial_delay=0.01, max_delay=0.02))
        retried: list[RetryableError] = []
        try:
            with caplog.at_level(logging.DEBUG):
                out = run_one(llm, retried=retried)
        finally:
            llm.unload()
    assert len(server.requests) == 4
    assert len(retried) == 3
    shown = [
        caplog.text,
        *(r.getMessage() for r in caplog.records),
        *(str(e) for e in retried),
        json.dumps(out),
        repr(llm),
        str(llm),
        json.dumps(llm.dump()),
        repr(llm.runtime_parameters_info()),
    ]
    assert all(KEY not in text for text in shown)
    assert all("***" in str(e) for e in retried)
    assert "***" in out["error"]


# -- keys, loading, plugin ------------------------------------------------------------------------


def test_missing_key_fails_at_load_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    llm = AnthropicLLM(model="claude-test")
    with pytest.raises(AuthenticationError, match=API_KEY_ENV):
        llm.load()


def test_default_server_is_anthropics() -> None:
    llm = AnthropicLLM(model="claude-test", api_key=KEY)
    assert llm.api_root() + llm.path == "https://api.anthropic.com/v1/messages"


def test_registered_under_its_entry_point() -> None:
    llm = get_llm("anthropic", model="claude-test", api_key=KEY)
    assert isinstance(llm, AnthropicLLM)
    assert llm.dump()["type"] == "anthropic"
    assert KEY not in json.dumps(llm.dump())


def test_plugin_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, taskloom_anthropic.plugin, taskloom_anthropic;"
        "print(*(name in sys.modules for name in ('anthropic', 'aiohttp', 'httpx')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False", "False"]


def test_using_the_plugin_never_imports_the_anthropic_sdk() -> None:
    # The SDK may well be installed (it is in the dev venv); this plugin must not need it.
    code = """
import sys
from taskloom import get_llm
llm = get_llm("anthropic", model="claude-test", api_key="k")
llm.base_url = sys.argv[1]
llm.load()
[out] = llm.generate([[{"role": "user", "content": "hi"}]], structured_output={"type": "object"})
[out2] = llm.generate([[{"role": "user", "content": "hi"}]])
llm.unload()
assert out["generations"] == ["Hello there."] == out2["generations"], (out, out2)
print("anthropic" in sys.modules, sorted(m for m in sys.modules if m.startswith("anthropic")))
"""
    with ScriptedServer([message()]) as server:
        result = subprocess.run([sys.executable, "-c", code, server.url], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False []"
    assert len(server.requests) == 2


def test_works_from_several_event_loops_and_after_reload() -> None:
    with ScriptedServer([message("one")]) as server:
        llm = make_llm(server)
        try:
            run_one(llm)

            async def elsewhere() -> Any:
                try:
                    return await llm.agenerate_batch([CHAT])
                finally:
                    await llm.aclose()

            [out] = asyncio.run(elsewhere())  # the caller's own loop gets its own session
            assert out["generations"] == ["one"]
            llm.unload()
            llm.load()
            assert run_one(llm)["generations"] == ["one"]
        finally:
            llm.unload()
    assert len(server.requests) == 3


def test_changed_base_url_is_used() -> None:
    with ScriptedServer([message("first")]) as first, ScriptedServer([message("second")]) as second:
        llm = make_llm(first)
        try:
            assert run_one(llm)["generations"] == ["first"]
            llm.base_url = second.url
            assert run_one(llm)["generations"] == ["second"]
        finally:
            llm.unload()
    assert len(first.requests) == 1
    assert len(second.requests) == 1


def test_copies_and_pickles_work_on_their_own() -> None:
    with ScriptedServer([message("hi")]) as server:
        llm = make_llm(server)
        try:
            run_one(llm)
            for other in (pickle.loads(pickle.dumps(llm)), copy.deepcopy(llm), llm.model_copy()):
                assert other.dump() == llm.dump()
                try:
                    assert run_one(other)["generations"] == ["hi"]
                finally:
                    other.unload()
            assert run_one(llm)["generations"] == ["hi"]  # the copies closed their sessions, not ours
        finally:
            llm.unload()
    assert len(server.requests) == 5


@pytest.fixture(scope="module")
def conformance_server() -> Any:
    with ScriptedServer([message("Hello.")]) as server:
        yield server


class TestConformanceScripted(LLMConformance):
    """The shared LLM checks, quick and without a model (they run against llama-server too)."""

    generation_kwargs = {"max_new_tokens": 16}

    @pytest.fixture
    def llm(self, conformance_server: ScriptedServer) -> AnthropicLLM:
        return AnthropicLLM(model="claude-test", base_url=conformance_server.url, api_key=KEY, retry=NO_RETRY)
