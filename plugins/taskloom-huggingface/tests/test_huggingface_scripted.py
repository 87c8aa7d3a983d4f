"""What a real server will not do on demand, against core's scripted loopback HTTP server.

Each test counts the requests the server received, so "retried" and "not retried" are checked,
not assumed. The router is stood in for by pointing ``taskloom_huggingface.llm.ROUTER`` at the
scripted server.
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
import taskloom_huggingface.llm as hf_llm
from huggingface_scripted_http import Reply, ScriptedServer, completion
from pydantic import BaseModel, ValidationError
from taskloom_huggingface import HuggingFaceLLM
from taskloom_huggingface.llm import ROUTED_PROVIDERS, response_format_for

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
    fields.setdefault("api_key", KEY)
    fields.setdefault("base_url", server.url)
    llm = HuggingFaceLLM(**fields)
    llm.load()
    return llm


def generate(llm: HuggingFaceLLM, num_generations: int = 1, **options: Any) -> Any:
    try:
        [out] = llm.generate([CHAT], num_generations, **options)
    finally:
        llm.unload()
    return out


def one_request(llm: HuggingFaceLLM) -> Any:
    """One request through the provider, without core's retries: shows the raised error class."""

    async def run() -> Any:
        try:
            return await llm.post(llm.body(CHAT, llm.options(), 1))
        finally:
            await llm.aclose()

    try:
        return asyncio.run(run())
    finally:
        llm.unload()


@pytest.fixture
def router(scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> ScriptedServer:
    """The scripted server standing in for router.huggingface.co."""
    monkeypatch.setattr(hf_llm, "ROUTER", scripted.url + "/v1")
    return scripted


# -- requests ----------------------------------------------------------------------------------


def test_request_shape_and_statistics(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(body=completion("Hello!", prompt_tokens=11, completion_tokens=2)))
    out = generate(make_llm(scripted), max_new_tokens=9, temperature=0.5, top_p=0.9, stop=["\n"], seed=42)
    assert out == {"generations": ["Hello!"], "statistics": {"input_tokens": [11], "output_tokens": [2]}}
    [request] = scripted.requests
    assert request.path == "/v1/chat/completions"  # appended to the server root
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body == {
        "model": "tgi",  # a server given no model still gets the field some servers require
        "messages": CHAT,
        "max_tokens": 9,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["\n"],
        "seed": 42,
    }


def test_max_new_tokens_defaults_to_512(scripted: ScriptedServer) -> None:
    generate(make_llm(scripted))
    assert scripted.requests[0].body == {"model": "tgi", "messages": CHAT, "max_tokens": 512}
    assert HuggingFaceLLM.Options().max_new_tokens == 512


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/", "/v1/chat/completions"])
def test_base_url_forms_all_reach_v1_chat_completions(scripted: ScriptedServer, suffix: str) -> None:
    generate(make_llm(scripted, base_url=scripted.url + suffix))
    assert scripted.requests[0].path == "/v1/chat/completions"


def test_model_with_base_url_is_the_payload_model_and_none_key_sends_no_header(scripted: ScriptedServer) -> None:
    llm = HuggingFaceLLM(base_url=scripted.url + "/v1", model="my-served-model", api_key="none", retry=FAST)
    assert llm.model_name == "my-served-model"
    generate(llm)
    [request] = scripted.requests
    assert request.body["model"] == "my-served-model"
    assert "authorization" not in request.headers


def test_key_from_the_environment_is_sent_and_never_dumped(
    scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_from_env_0123")
    llm = HuggingFaceLLM(base_url=scripted.url, retry=FAST)
    generate(llm)
    assert scripted.requests[0].headers["authorization"] == "Bearer hf_from_env_0123"
    assert "hf_from_env_0123" not in repr(llm) + str(llm.dump())


def test_seeded_generations_use_seed_plus_index_in_order(scripted: ScriptedServer) -> None:
    # Each answer names the seed it was asked with, and they come back slowly: all three must
    # be in flight at once, and generation i must be the answer to seed + i.
    scripted.answer(lambda body: Reply(body=completion(f"seed {body['seed']}", 5, body["seed"]), delay=0.3))
    started = time.monotonic()
    out = generate(make_llm(scripted), num_generations=3, seed=7)
    assert time.monotonic() - started < 0.85, "the three requests were not in flight together"
    assert out == {
        "generations": ["seed 7", "seed 8", "seed 9"],
        "statistics": {"input_tokens": [5, 5, 5], "output_tokens": [7, 8, 9]},
    }
    assert sorted(r.body["seed"] for r in scripted.requests) == [7, 8, 9]


def test_unseeded_generations_are_one_request_each(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(body=completion("a", 5, 1), delay=0.3))
    started = time.monotonic()
    out = generate(make_llm(scripted), num_generations=3)
    assert time.monotonic() - started < 0.85, "the three requests were not in flight together"
    assert out["generations"] == ["a", "a", "a"]
    assert out["statistics"] == {"input_tokens": [5, 5, 5], "output_tokens": [1, 1, 1]}
    assert len(scripted.requests) == 3
    assert all("seed" not in r.body for r in scripted.requests)


class Person(BaseModel):
    name: str
    age: int


def test_structured_output_shape_for_a_server(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(body=completion('{"name": "Ada", "age": 36}')))
    out = generate(make_llm(scripted), structured_output=Person)
    assert Person.model_validate_json(out["generations"][0] or "") == Person(name="Ada", age=36)
    schema = Person.model_json_schema()
    # TGI reads `value`, llama.cpp's server reads `schema`.
    assert scripted.requests[0].body["response_format"] == {"type": "json_object", "value": schema, "schema": schema}


def test_structured_output_shape_for_the_router() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"], "title": "An X!"}
    assert response_format_for(schema, self_hosted=False) == {
        "type": "json_schema",
        "json_schema": {"name": "An_X_", "schema": schema, "strict": True},
    }
    assert response_format_for({"type": "object"}, self_hosted=False)["json_schema"]["name"] == "output"


def test_model_id_goes_to_the_router_with_the_json_schema_format(router: ScriptedServer) -> None:
    llm = HuggingFaceLLM(model="org/chat-model", api_key=KEY, retry=FAST)
    out = generate(llm, structured_output=Person, max_new_tokens=5)
    assert out["generations"] == ["Hi there."]
    [request] = router.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body["model"] == "org/chat-model"
    assert request.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Person", "schema": Person.model_json_schema(), "strict": True},
    }


@pytest.mark.parametrize(
    ("provider", "model"),
    [(None, "org/chat-model"), ("auto", "org/chat-model"), ("together", "org/chat-model:together")],
)
def test_provider_is_a_suffix_of_the_model(router: ScriptedServer, provider: str | None, model: str) -> None:
    llm = HuggingFaceLLM(model="org/chat-model", provider=provider, api_key=KEY, retry=FAST)
    assert llm.model_name == "org/chat-model"
    generate(llm)
    assert router.requests[0].body["model"] == model


def test_the_real_router_address() -> None:
    assert HuggingFaceLLM(model="a/b", api_key=KEY).api_root() == "https://router.huggingface.co/v1"


# -- failures ----------------------------------------------------------------------------------


def test_429_with_retry_after_is_retried_after_waiting(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(429, {"error": "slow down"}, {"Retry-After": "1"}), Reply())
    out = generate(make_llm(scripted))
    assert out["generations"] == ["Hi there."]
    assert len(scripted.requests) == 2
    assert scripted.requests[1].at - scripted.requests[0].at >= 0.95


def test_429_storm_is_retried_until_it_passes(scripted: ScriptedServer) -> None:
    storm = Reply(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0.1"})
    scripted.answer(storm, storm, storm, storm, Reply())
    out = generate(make_llm(scripted, retry=RetryPolicy(max_attempts=6, initial_delay=0.01, max_delay=0.02)))
    assert out["generations"] == ["Hi there."]
    assert len(scripted.requests) == 5
    gaps = [b.at - a.at for a, b in zip(scripted.requests, scripted.requests[1:], strict=False)]
    assert min(gaps) >= 0.09  # every wait honoured Retry-After, not the shorter backoff


def test_429_maps_to_rate_limit_with_retry_after(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(429, {"error": "slow down"}, {"Retry-After": "3"}))
    with pytest.raises(RateLimitError) as caught:
        one_request(make_llm(scripted))
    assert caught.value.retry_after == 3.0
    assert caught.value.status == 429
    assert "slow down" in str(caught.value)


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
    scripted.answer(Reply(status, {"error": "boom", "error_type": "generation"}))  # TGI's error shape
    with pytest.raises(error_class, match="boom") as caught:
        one_request(make_llm(scripted))
    assert getattr(caught.value, "status", None) == status


def test_500_is_retried_then_succeeds(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(500, {"error": "boom"}), Reply(500, {"error": "boom"}), Reply())
    assert generate(make_llm(scripted))["generations"] == ["Hi there."]
    assert len(scripted.requests) == 3


def test_500_for_good_is_recorded_on_the_row(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(500, {"error": "boom"}))
    out = generate(make_llm(scripted), num_generations=2)
    assert out["generations"] == [None, None]
    assert "ServerError" in (out.get("error") or "")
    assert len(scripted.requests) == 2 * FAST.max_attempts


def test_529_overloaded_is_retried(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(529, {"error": "overloaded"}), Reply())
    assert generate(make_llm(scripted))["generations"] == ["Hi there."]
    assert len(scripted.requests) == 2


def test_timeout_is_mapped_and_retried(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(delay=2.0))
    with pytest.raises(RequestTimeoutError):
        one_request(make_llm(scripted, timeout=0.2))
    scripted.answer(Reply(delay=2.0), Reply())
    started = time.monotonic()
    out = generate(make_llm(scripted, timeout=0.3))
    assert out["generations"] == ["Hi there."]
    assert len(scripted.requests) == 2
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    "body",
    [
        "this is not json",
        "[1, 2]",
        "{}",
        '{"choices": []}',
        '{"choices": ["x"]}',
        '{"choices": [{"message": {"content": 5}}]}',
    ],
)
def test_malformed_body_is_a_server_error_and_retried(scripted: ScriptedServer, body: str) -> None:
    scripted.answer(Reply(200, body))
    out = generate(make_llm(scripted))
    assert out["generations"] == [None]
    assert (out.get("error") or "").startswith("ServerError")
    assert len(scripted.requests) == FAST.max_attempts
    scripted.answer(Reply(200, body), Reply())
    assert generate(make_llm(scripted))["generations"] == ["Hi there."]
    assert len(scripted.requests) == 2


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_stops_the_run(scripted: ScriptedServer, status: int) -> None:
    scripted.answer(Reply(status, {"error": "invalid token"}))
    llm = make_llm(scripted)
    try:
        with pytest.raises(AuthenticationError, match=f"{status}.*HF_TOKEN"):
            llm.generate([CHAT, CHAT])
    finally:
        llm.unload()
    assert len(scripted.requests) <= 2  # one per input, never retried


@pytest.mark.parametrize("status", [400, 404, 422])
def test_bad_request_is_recorded_not_retried(scripted: ScriptedServer, status: int) -> None:
    scripted.answer(Reply(status, {"error": "prompt too long"}))
    with pytest.raises(BadRequestError):
        one_request(make_llm(scripted))
    scripted.answer(Reply(status, {"error": "prompt too long"}))
    out = generate(make_llm(scripted))
    assert out["generations"] == [None]
    assert "BadRequestError" in (out.get("error") or "")
    assert len(scripted.requests) == 1


def test_connection_refused_is_a_retryable_server_error(scripted: ScriptedServer) -> None:
    url = scripted.url
    scripted.close()
    with pytest.raises(ServerError, match=re.escape(f"{url}/v1")):
        one_request(HuggingFaceLLM(base_url=url, api_key=KEY, retry=FAST))


# -- one generation failing among several -------------------------------------------------------


def test_a_seeded_generation_that_fails_for_good_keeps_the_others(scripted: ScriptedServer) -> None:
    def script(body: Any) -> Reply:
        if body["seed"] == 8:
            return Reply(500, {"error": "that seed crashes"})
        return Reply(body=completion(f"seed {body['seed']}", 4, 2))

    scripted.answer(script)
    out = generate(make_llm(scripted), num_generations=3, seed=7)
    assert out["generations"] == ["seed 7", None, "seed 9"]
    assert out["statistics"] == {"input_tokens": [4, 0, 4], "output_tokens": [2, 0, 2]}
    errors = out.get("errors") or []
    assert errors[0] is None and errors[2] is None
    assert errors[1] is not None and errors[1].startswith("ServerError") and "that seed crashes" in errors[1]
    assert "error" not in out
    assert sorted(r.body["seed"] for r in scripted.requests) == [7, 8, 8, 8, 9]  # only the failed one retried


def test_an_unseeded_generation_that_fails_for_good_keeps_the_others(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(), Reply(400, {"error": "refused"}), Reply())
    out = generate(make_llm(scripted), num_generations=3)
    assert sorted(out["generations"], key=str) == ["Hi there.", "Hi there.", None]  # type: ignore[arg-type]
    errors = out.get("errors") or []
    failed = [i for i, e in enumerate(errors) if e]
    assert len(failed) == 1 and out["generations"][failed[0]] is None
    assert "BadRequestError" in (errors[failed[0]] or "")
    assert len(scripted.requests) == 3


def test_all_seeded_generations_failing_is_the_rows_error(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(422, {"error": "no"}))
    out = generate(make_llm(scripted), num_generations=2, seed=1)
    assert out["generations"] == [None, None]
    assert "BadRequestError" in (out.get("error") or "")
    assert "errors" not in out


def test_auth_failure_among_seeded_generations_stops_the_run(scripted: ScriptedServer) -> None:
    scripted.answer(lambda body: Reply(401, {"error": "bad token"}) if body["seed"] == 2 else Reply())
    llm = make_llm(scripted)
    try:
        with pytest.raises(AuthenticationError):
            llm.generate([CHAT], num_generations=3, seed=1)
    finally:
        llm.unload()


# -- the key never shows ------------------------------------------------------------------------


def test_key_never_appears_in_errors_logs_or_repr(scripted: ScriptedServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echo = {"error": {"message": f"bad header Authorization: Bearer {KEY}"}}
    seen: list[str] = []

    scripted.answer(Reply(500, echo))  # retried, then recorded on the row
    out = generate(make_llm(scripted), num_generations=2, seed=3)
    seen.append(str(out))
    scripted.answer(Reply(200, f"<html>{KEY}</html>"))  # not JSON
    seen.append(str(generate(make_llm(scripted))))
    scripted.answer(Reply(200, {"choices": KEY}))  # JSON of the wrong shape
    seen.append(str(generate(make_llm(scripted))))
    for status in (400, 401):
        scripted.answer(Reply(status, echo))
        with pytest.raises((BadRequestError, AuthenticationError)) as caught:
            one_request(make_llm(scripted))
        seen += [str(caught.value), repr(caught.value), repr(caught.value.__cause__), repr(caught.value.__context__)]

    llm = make_llm(scripted)
    seen += [repr(llm), str(llm.dump()), str(llm.model_dump())]
    llm.unload()
    seen.append(caplog.text)
    assert all(KEY not in text for text in seen), [text for text in seen if KEY in text]
    assert "***" in seen[0]  # the echo was kept, without the key


# -- keys, providers, registration --------------------------------------------------------------


def test_missing_key_fails_at_load_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(AuthenticationError, match="HF_TOKEN"):
        HuggingFaceLLM(model="HuggingFaceTB/SmolLM2-135M-Instruct").load()
    with pytest.raises(AuthenticationError, match="HF_TOKEN") as caught:
        HuggingFaceLLM(base_url="http://127.0.0.1:9").load()
    assert "api_key='none'" in str(caught.value)


def test_the_router_needs_a_hugging_face_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    HuggingFaceLLM(base_url="http://127.0.0.1:9", api_key="none").load()
    with pytest.raises(AuthenticationError, match="HF_TOKEN"):
        HuggingFaceLLM(model="some/model", api_key="none").load()
    with pytest.raises(AuthenticationError, match="router"):
        HuggingFaceLLM(model="some/model", api_key="sk-not-a-hf-token").load()
    # A provider's own key no longer goes straight to the provider: the router takes only hf_ tokens.
    with pytest.raises(AuthenticationError, match="inference-providers"):
        HuggingFaceLLM(model="some/model", provider="together", api_key="together-key").load()
    HuggingFaceLLM(model="some/model", provider="together", api_key=KEY).load()
    HuggingFaceLLM(base_url="http://127.0.0.1:9", api_key="sk-any-server-key").load()


def test_target_validation() -> None:
    with pytest.raises(ValidationError, match="model id"):
        HuggingFaceLLM(api_key=KEY)
    with pytest.raises(ValidationError, match="provider"):
        HuggingFaceLLM(base_url="http://127.0.0.1:9", provider="together", api_key=KEY)
    with pytest.raises(ValidationError, match="http"):
        HuggingFaceLLM(base_url="127.0.0.1:9", api_key=KEY)
    assert HuggingFaceLLM(base_url="http://127.0.0.1:9", api_key=KEY).model_name == "http://127.0.0.1:9"


def test_provider_validation() -> None:
    with pytest.raises(ValueError, match=r"Unknown Inference Provider 'no-such-provider'.*together"):
        HuggingFaceLLM(model="a/b", provider="no-such-provider", api_key=KEY).load()
    with pytest.raises(ValueError, match="'openai' LLM"):
        HuggingFaceLLM(model="a/b", provider="openai", api_key=KEY).load()
    for provider in ("auto", *ROUTED_PROVIDERS):
        HuggingFaceLLM(model="a/b", provider=provider, api_key=KEY).load()


def test_provider_list_matches_huggingface_hub() -> None:
    """Our list is huggingface_hub's, less openai; a newer SDK's extra names are accepted at load()."""
    from huggingface_hub.inference._providers import PROVIDERS

    assert set(PROVIDERS) - {"openai"} == ROUTED_PROVIDERS


def test_registered_under_huggingface_with_its_options() -> None:
    llm = get_llm("huggingface", model="a/b", api_key=KEY)
    assert isinstance(llm, HuggingFaceLLM)
    info = {option["name"]: option for option in llm.options_info()}
    assert set(info) == {"temperature", "top_p", "max_new_tokens", "stop", "seed", "structured_output"}
    assert info["max_new_tokens"]["default"] == 512
    assert "seed + i" in info["seed"]["description"]
    assert all(option["description"] for option in info.values()), "every option is described"


def test_neither_listing_nor_chat_imports_huggingface_hub() -> None:
    code = textwrap.dedent(
        """
        import sys
        import taskloom_huggingface.plugin
        from taskloom_huggingface import HuggingFaceLLM
        from taskloom.testing.http import Reply, ScriptedServer

        assert "huggingface_hub" not in sys.modules, "imported by the plugin module"
        body = {"choices": [{"message": {"content": "ok"}}], "usage": {}}
        with ScriptedServer([Reply(body=body)]) as server:
            llm = HuggingFaceLLM(base_url=server.url, api_key="none")
            assert llm.generate([[{"role": "user", "content": "hi"}]])[0]["generations"] == ["ok"]
            llm.unload()
        HuggingFaceLLM(model="a/b", provider="together", api_key="hf_x").load()
        assert "huggingface_hub" not in sys.modules, "imported to chat"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
