"""Failures a real server will not produce on demand, against a scripted loopback HTTP server.

Each test counts the requests the server received, so "retried" and "not retried" are checked,
not assumed.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import pytest
from huggingface_scripted_http import Reply, ScriptedServer, completion
from pydantic import BaseModel, ValidationError
from taskloom_huggingface import HuggingFaceLLM
from taskloom_huggingface.llm import response_format_for

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

KEY = "hf_scripted_secret_0123456789"
CHAT = [{"role": "user", "content": "Hello?"}]
FAST = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02)


def make_llm(server: ScriptedServer, **fields: Any) -> HuggingFaceLLM:
    fields.setdefault("retry", FAST)
    llm = HuggingFaceLLM(base_url=server.url, api_key=KEY, **fields)
    llm.load()
    return llm


def one_call(llm: HuggingFaceLLM, num_generations: int = 1, **kwargs: Any) -> Any:
    """One agenerate, without core's retries, on a fresh loop: shows the raised error class."""

    async def run() -> Any:
        try:
            return await llm.agenerate(CHAT, num_generations, **kwargs)
        finally:
            llm.unload()

    return asyncio.run(run())


def test_request_shape_and_statistics(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(body=completion("Hello!", prompt_tokens=11, completion_tokens=2)))
    llm = make_llm(scripted)
    try:
        [out] = llm.generate([CHAT], max_new_tokens=9, temperature=0.5, top_p=0.9, stop=["\n"], seed=42)
    finally:
        llm.unload()
    assert out == {"generations": ["Hello!"], "statistics": {"input_tokens": [11], "output_tokens": [2]}}
    [request] = scripted.requests
    assert request.path == "/v1/chat/completions"  # appended to the server root
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = request.body
    assert body["messages"] == CHAT
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"], body["seed"]) == (
        9,
        0.5,
        0.9,
        ["\n"],
        42,
    )
    assert "response_format" not in body


def test_base_url_ending_in_v1_and_model_in_payload(scripted: ScriptedServer) -> None:
    llm = HuggingFaceLLM(base_url=scripted.url + "/v1", model="my-served-model", api_key="none", retry=FAST)
    assert llm.model_name == "my-served-model"
    llm.load()
    try:
        llm.generate([CHAT])
    finally:
        llm.unload()
    [request] = scripted.requests
    assert request.path == "/v1/chat/completions"
    assert request.body["model"] == "my-served-model"
    assert request.headers["authorization"] == "Bearer none"


def test_num_generations_are_concurrent_requests_with_distinct_seeds(scripted: ScriptedServer) -> None:
    scripted.answer(
        Reply(body=completion("a", 5, 1), delay=0.3),
        Reply(body=completion("b", 5, 2), delay=0.3),
        Reply(body=completion("c", 5, 3), delay=0.3),
    )
    llm = make_llm(scripted)
    started = time.monotonic()
    try:
        [out] = llm.generate([CHAT], num_generations=3, seed=7)
    finally:
        llm.unload()
    assert time.monotonic() - started < 0.85, "the three requests were not in flight together"
    assert sorted(out["generations"]) == ["a", "b", "c"]  # type: ignore[type-var]
    assert out["statistics"]["input_tokens"] == [5, 5, 5]
    assert sorted(out["statistics"]["output_tokens"]) == [1, 2, 3]
    assert sorted(r.body["seed"] for r in scripted.requests) == [7, 8, 9]


class Person(BaseModel):
    name: str
    age: int


def test_structured_output_shape_for_a_server(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(body=completion('{"name": "Ada", "age": 36}')))
    llm = make_llm(scripted)
    try:
        [out] = llm.generate([CHAT], structured_output=Person)
    finally:
        llm.unload()
    assert Person.model_validate_json(out["generations"][0] or "") == Person(name="Ada", age=36)
    fmt = scripted.requests[0].body["response_format"]
    schema = Person.model_json_schema()
    # TGI reads `value`, llama.cpp's server reads `schema`; huggingface_hub passes json_object through.
    assert fmt == {"type": "json_object", "value": schema, "schema": schema}


def test_structured_output_shape_for_inference_providers() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"], "title": "X"}
    assert response_format_for(schema) == {
        "type": "json_schema",
        "json_schema": {"name": "X", "schema": schema, "strict": True},
    }
    with pytest.raises(TypeError):
        response_format_for("not a schema")  # type: ignore[arg-type]


def test_model_id_goes_through_the_router_with_the_json_schema_format(
    scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub.inference._providers import CONVERSATIONAL_AUTO_ROUTER

    monkeypatch.setattr(CONVERSATIONAL_AUTO_ROUTER, "base_url", scripted.url)  # stands in for router.huggingface.co
    llm = HuggingFaceLLM(model="org/chat-model", api_key=KEY, retry=FAST)
    llm.load()
    try:
        [out] = llm.generate([CHAT], structured_output=Person, max_new_tokens=5)
    finally:
        llm.unload()
    assert out["generations"] == ["Hi there."]
    [request] = scripted.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body["model"] == "org/chat-model"
    assert request.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Person", "schema": Person.model_json_schema(), "strict": True},
    }


def test_429_with_retry_after_is_retried_after_waiting(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(429, {"error": "slow down"}, {"Retry-After": "1"}), Reply())
    llm = make_llm(scripted)
    try:
        [out] = llm.generate([CHAT])
    finally:
        llm.unload()
    assert out["generations"] == ["Hi there."]
    assert len(scripted.requests) == 2
    assert scripted.requests[1].at - scripted.requests[0].at >= 0.95


def test_429_maps_to_rate_limit_with_retry_after(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(429, {"error": "slow down"}, {"Retry-After": "3"}))
    with pytest.raises(RateLimitError) as caught:
        one_call(make_llm(scripted))
    assert caught.value.retry_after == 3.0
    assert caught.value.status == 429


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (500, ServerError),
        (502, ServerError),
        (503, OverloadedError),
        (529, OverloadedError),
        (408, RequestTimeoutError),
    ],
)
def test_transient_statuses(scripted: ScriptedServer, status: int, error_class: type[Exception]) -> None:
    scripted.answer(Reply(status, {"error": "boom"}))
    with pytest.raises(error_class) as caught:
        one_call(make_llm(scripted))
    assert getattr(caught.value, "status", None) == status


def test_500_is_retried_then_succeeds(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(500, {"error": "boom"}), Reply(500, {"error": "boom"}), Reply())
    llm = make_llm(scripted)
    try:
        [out] = llm.generate([CHAT])
    finally:
        llm.unload()
    assert out["generations"] == ["Hi there."]
    assert len(scripted.requests) == 3


def test_500_for_good_is_recorded_on_the_row(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(500, {"error": "boom"}))
    llm = make_llm(scripted)
    try:
        [out] = llm.generate([CHAT], num_generations=2)
    finally:
        llm.unload()
    assert out["generations"] == [None, None]
    assert "ServerError" in (out.get("error") or "")
    assert len(scripted.requests) == 2 * FAST.max_attempts


def test_529_overloaded_is_retried(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(529, {"error": "overloaded"}), Reply())
    llm = make_llm(scripted)
    try:
        [out] = llm.generate([CHAT])
    finally:
        llm.unload()
    assert out["generations"] == ["Hi there."]
    assert len(scripted.requests) == 2


def test_timeout_is_retried_and_mapped(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(delay=2.0))
    with pytest.raises(RequestTimeoutError):
        one_call(make_llm(scripted, timeout=0.2))
    scripted.answer(Reply(delay=2.0), Reply())
    llm = make_llm(scripted, timeout=0.3)
    started = time.monotonic()
    try:
        [out] = llm.generate([CHAT])
    finally:
        llm.unload()
    assert out["generations"] == ["Hi there."]
    assert len(scripted.requests) == 2
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("body", ["this is not json", "[1, 2]", "{}"])
def test_malformed_body_is_a_server_error_and_retried(scripted: ScriptedServer, body: str) -> None:
    scripted.answer(Reply(200, body))
    with pytest.raises(ServerError, match="malformed"):
        one_call(make_llm(scripted))
    scripted.answer(Reply(200, body), Reply())
    llm = make_llm(scripted)
    try:
        [out] = llm.generate([CHAT])
    finally:
        llm.unload()
    assert out["generations"] == ["Hi there."]
    assert len(scripted.requests) == 2


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_stops_the_run_without_the_key(scripted: ScriptedServer, status: int) -> None:
    # The body echoes the key, as some servers do: it must not reach the message.
    scripted.answer(Reply(status, {"error": f"invalid token {KEY}"}))
    llm = make_llm(scripted)
    try:
        with pytest.raises(AuthenticationError) as caught:
            llm.generate([CHAT, CHAT])
    finally:
        llm.unload()
    assert str(status) in str(caught.value)
    assert KEY not in str(caught.value)
    assert (caught.value.__cause__ is None and caught.value.__context__ is None) or KEY not in repr(
        caught.value.__context__
    )
    assert len(scripted.requests) <= 2  # one per input, never retried


@pytest.mark.parametrize("status", [400, 404, 422])
def test_bad_request_is_recorded_not_retried(scripted: ScriptedServer, status: int) -> None:
    scripted.answer(Reply(status, {"error": "prompt too long"}))
    with pytest.raises(BadRequestError):
        one_call(make_llm(scripted))
    scripted.answer(Reply(status, {"error": "prompt too long"}))
    llm = make_llm(scripted)
    try:
        [out] = llm.generate([CHAT])
    finally:
        llm.unload()
    assert out["generations"] == [None]
    assert "BadRequestError" in (out.get("error") or "")
    assert len(scripted.requests) == 1


def test_connection_refused_is_a_retryable_server_error(scripted: ScriptedServer) -> None:
    url = scripted.url
    scripted.close()
    llm = HuggingFaceLLM(base_url=url, api_key=KEY, retry=FAST)
    llm.load()
    with pytest.raises(ServerError, match="could not talk"):
        one_call(llm)


# -- keys, validation, registration ------------------------------------------------------------


def test_missing_key_fails_at_load_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    llm = HuggingFaceLLM(model="HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(AuthenticationError, match="HF_TOKEN"):
        llm.load()
    local = HuggingFaceLLM(base_url="http://127.0.0.1:9")
    with pytest.raises(AuthenticationError, match="HF_TOKEN") as caught:
        local.load()
    assert "api_key='none'" in str(caught.value)


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    llm = HuggingFaceLLM(model="some/model")
    llm.load()
    assert llm.api_key is not None and llm.api_key.get_secret_value() == "hf_from_env"
    assert "hf_from_env" not in repr(llm) + str(llm.dump())


def test_none_key_only_for_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    HuggingFaceLLM(base_url="http://127.0.0.1:9", api_key="none").load()
    with pytest.raises(AuthenticationError, match="HF_TOKEN"):
        HuggingFaceLLM(model="some/model", api_key="none").load()
    with pytest.raises(AuthenticationError, match="router"):
        HuggingFaceLLM(model="some/model", api_key="sk-not-a-hf-token").load()
    HuggingFaceLLM(model="some/model", provider="together", api_key="together-key").load()


def test_target_validation() -> None:
    with pytest.raises(ValidationError, match="model id"):
        HuggingFaceLLM(api_key=KEY)
    with pytest.raises(ValidationError, match="provider"):
        HuggingFaceLLM(base_url="http://127.0.0.1:9", provider="together", api_key=KEY)
    with pytest.raises(ValidationError, match="http"):
        HuggingFaceLLM(base_url="127.0.0.1:9", api_key=KEY)
    with pytest.raises(ValueError, match="Unknown Inference Provider"):
        HuggingFaceLLM(model="a/b", provider="no-such-provider", api_key=KEY).load()
    assert HuggingFaceLLM(base_url="http://127.0.0.1:9", api_key=KEY).model_name == "http://127.0.0.1:9"
    assert HuggingFaceLLM(model="a/b", provider="together", api_key=KEY).model_name == "a/b"


def test_registered_under_huggingface() -> None:
    llm = get_llm("huggingface", model="a/b", api_key=KEY)
    assert isinstance(llm, HuggingFaceLLM)
    assert set(llm.generation_parameters()) == {
        "temperature",
        "top_p",
        "max_new_tokens",
        "stop",
        "seed",
        "structured_output",
    }
    assert all(llm.generation_parameters().values()), "every generation kwarg is described"


def test_plugin_module_does_not_import_the_sdk() -> None:
    code = (
        "import sys, taskloom_huggingface.plugin, taskloom_huggingface; "
        "assert 'huggingface_hub' not in sys.modules, 'SDK imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
