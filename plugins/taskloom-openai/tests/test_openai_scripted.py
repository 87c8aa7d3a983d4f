"""OpenAILLM against a scripted loopback server: failures, retries, request shapes, statistics.

A real server does not produce 429s, 5xx, timeouts or malformed bodies on demand, so these are
scripted here; the success paths are also checked against llama-server in test_openai_llama_server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any, Literal

import pytest
from openai_scripted_http import Reply, ScriptedServer, completion
from pydantic import BaseModel
from taskloom_openai import OpenAILLM
from taskloom_openai.llm import response_format, split_evenly

import taskloom
from taskloom.errors import AuthenticationError
from taskloom.retry import RetryPolicy

CHAT = [{"role": "user", "content": "Hi"}]
KEY = "sk-test-very-secret-key-123"


CLIENT: Literal["direct", "sdk"] = "direct"


@pytest.fixture(autouse=True, params=["direct", "sdk"])
def _both_clients(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every scripted failure and request shape is checked on both ways of sending requests."""
    monkeypatch.setattr(sys.modules[__name__], "CLIENT", request.param)


def make_llm(server: ScriptedServer, **fields: Any) -> OpenAILLM:
    fields.setdefault("retry", RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05))
    fields.setdefault("client", CLIENT)
    return OpenAILLM(model="scripted", base_url=f"{server.url}/v1", api_key=KEY, **fields)


def run(llm: OpenAILLM, num_generations: int = 1, **kwargs: Any) -> dict[str, Any]:
    llm.load()
    try:
        [output] = llm.generate([CHAT], num_generations=num_generations, **kwargs)
    finally:
        llm.unload()
    return dict(output)


# -- retries -------------------------------------------------------------------------------------


def test_rate_limit_waits_retry_after_then_succeeds(scripted: ScriptedServer) -> None:
    scripted.answer(
        Reply(429, {"error": {"message": "slow down", "type": "rate_limit"}}, {"Retry-After": "1"}),
        completion(["done"]),
    )
    output = run(make_llm(scripted))
    assert output["generations"] == ["done"]
    assert len(scripted.requests) == 2
    assert scripted.requests[1].at - scripted.requests[0].at >= 0.9  # honoured Retry-After, not the 0.01 s backoff


@pytest.mark.parametrize("status", [500, 502, 503, 529])
def test_server_errors_and_overloads_are_retried(scripted: ScriptedServer, status: int) -> None:
    scripted.answer(Reply(status, {"error": {"message": "busy"}}), completion(["fine"]))
    assert run(make_llm(scripted))["generations"] == ["fine"]
    assert len(scripted.requests) == 2


def test_persistent_server_error_is_recorded_on_the_row(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(500, {"error": {"message": "boom"}}))
    output = run(make_llm(scripted))
    assert output["generations"] == [None]
    assert "ServerError" in output["error"]
    assert "500" in output["error"]
    assert len(scripted.requests) == 3  # max_attempts


def test_overload_error_class(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(529, {"error": {"message": "overloaded"}}))
    output = run(make_llm(scripted, retry=RetryPolicy(max_attempts=2, initial_delay=0.01)))
    assert "OverloadedError" in output["error"]
    assert len(scripted.requests) == 2


def test_timeout_is_retried(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(delay=1.5, body=completion(["late"]).body), completion(["on time"]))
    started = time.monotonic()
    output = run(make_llm(scripted, timeout=0.3))
    assert output["generations"] == ["on time"]
    assert len(scripted.requests) == 2
    assert time.monotonic() - started < 1.4  # gave up on the first request at the timeout


def test_timeout_recorded_when_it_persists(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(delay=1.0, body=completion(["late"]).body))
    output = run(make_llm(scripted, timeout=0.2, retry=RetryPolicy(max_attempts=2, initial_delay=0.01)))
    assert output["generations"] == [None]
    assert "RequestTimeoutError" in output["error"]
    assert len(scripted.requests) == 2


@pytest.mark.parametrize(
    "body",
    [
        b'{"choices": [{"index": 0, "message": {"content": "cut off',  # not JSON
        b"{}",  # JSON, but no choices
        b'{"choices": "nope"}',
    ],
)
def test_malformed_body_is_a_retried_server_error(scripted: ScriptedServer, body: bytes) -> None:
    scripted.answer(Reply(200, body))
    output = run(make_llm(scripted))
    assert output["generations"] == [None]
    assert "ServerError" in output["error"]
    assert len(scripted.requests) == 3


@pytest.mark.parametrize("status", [401, 403])
def test_authentication_error_stops_without_retry_and_hides_the_key(scripted: ScriptedServer, status: int) -> None:
    scripted.answer(Reply(status, {"error": {"message": f"Incorrect API key provided: {KEY}", "type": "auth"}}))
    llm = make_llm(scripted)
    llm.load()
    try:
        with pytest.raises(AuthenticationError) as caught:
            llm.generate([CHAT])
    finally:
        llm.unload()
    assert len(scripted.requests) == 1
    assert scripted.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in str(caught.value)
    assert "[redacted]" in str(caught.value)
    assert caught.value.__cause__ is None  # the SDK exception echoing the key is not chained


@pytest.mark.parametrize("status", [400, 404, 422])
def test_bad_request_is_recorded_without_retry(scripted: ScriptedServer, status: int) -> None:
    scripted.answer(Reply(status, {"error": {"message": "prompt too long"}}))
    output = run(make_llm(scripted))
    assert output["generations"] == [None]
    assert "BadRequestError" in output["error"]
    assert "prompt too long" in output["error"]
    assert len(scripted.requests) == 1


# -- request shape ----------------------------------------------------------------------------


def test_generation_kwargs_are_mapped(scripted: ScriptedServer) -> None:
    scripted.answer(completion(["ok"]))
    run(make_llm(scripted), temperature=0.5, top_p=0.9, max_new_tokens=7, stop=["\n"], seed=3)
    sent = scripted.requests[0].body
    assert scripted.requests[0].path == "/v1/chat/completions"
    assert sent["model"] == "scripted"
    assert sent["messages"] == CHAT
    assert sent["temperature"] == 0.5
    assert sent["top_p"] == 0.9
    assert sent["max_tokens"] == 7
    assert sent["stop"] == ["\n"]
    assert sent["seed"] == 3
    assert "n" not in sent
    assert "max_completion_tokens" not in sent


def test_unset_kwargs_are_not_sent(scripted: ScriptedServer) -> None:
    scripted.answer(completion(["ok"]))
    run(make_llm(scripted), max_new_tokens=None)
    sent = scripted.requests[0].body
    assert set(sent) == {"model", "messages"}


def test_max_tokens_parameter(scripted: ScriptedServer) -> None:
    scripted.answer(completion(["ok"]))
    run(make_llm(scripted, max_tokens_parameter="max_completion_tokens"), max_new_tokens=9)
    sent = scripted.requests[0].body
    assert sent["max_completion_tokens"] == 9
    assert "max_tokens" not in sent
    assert OpenAILLM(model="gpt-4o-mini")._max_tokens_field() == "max_completion_tokens"


class Verdict(BaseModel):
    answer: Literal["yes", "no"]
    reason: str = ""


def test_structured_output_from_a_pydantic_class(scripted: ScriptedServer) -> None:
    scripted.answer(completion(['{"answer": "yes", "reason": ""}']))
    output = run(make_llm(scripted), structured_output=Verdict)
    assert Verdict.model_validate_json(output["generations"][0]).answer == "yes"
    sent = scripted.requests[0].body["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == "Verdict"
    assert sent["json_schema"]["strict"] is True
    schema = sent["json_schema"]["schema"]
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["answer", "reason"]


def test_structured_output_from_a_dict_and_as_generation_kwarg(scripted: ScriptedServer) -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "integer"},
            "b": {
                "type": "array",
                "items": {"type": "object", "properties": {"c": {"type": "string", "maxLength": 40}}},
            },
        },
    }
    scripted.answer(completion(['{"a": 1, "b": []}']))
    run(make_llm(scripted, generation_kwargs={"structured_output": schema}))
    sent = scripted.requests[0].body["response_format"]["json_schema"]
    assert sent["name"] == "output"
    assert sent["schema"]["required"] == ["a", "b"]
    assert sent["schema"]["properties"]["b"]["items"]["additionalProperties"] is False
    assert sent["schema"]["properties"]["b"]["items"]["properties"]["c"] == {"type": "string"}  # strict: no lengths
    assert "additionalProperties" not in schema  # the caller's dict is not changed


def test_pydantic_class_in_generation_kwargs_dumps_as_plain_data() -> None:
    llm = OpenAILLM(model="m", api_key=KEY, generation_kwargs={"structured_output": Verdict})
    assert llm.generation_kwargs["structured_output"] == Verdict.model_json_schema()
    llm.set_runtime_parameters({"structured_output": Verdict})
    data = llm.dump()
    json.dumps(data)
    rebuilt = taskloom.load_llm(data)
    assert response_format(rebuilt.generation_kwargs["structured_output"]) == response_format(Verdict)
    assert KEY not in json.dumps(data)


# -- num_generations and statistics ---------------------------------------------------------------


def test_n_in_one_request_with_usage_split(scripted: ScriptedServer) -> None:
    scripted.answer(completion(["a", "b", "c"], prompt_tokens=11, completion_tokens=10))
    output = run(make_llm(scripted), num_generations=3)
    assert output["generations"] == ["a", "b", "c"]
    assert output["statistics"] == {"input_tokens": [11, 11, 11], "output_tokens": [4, 3, 3]}
    assert len(scripted.requests) == 1
    assert scripted.requests[0].body["n"] == 3


def test_fewer_choices_than_asked_are_filled_up(scripted: ScriptedServer) -> None:
    scripted.answer(
        completion(["first"], prompt_tokens=5, completion_tokens=2),
        completion(["more"], prompt_tokens=5, completion_tokens=3),
    )
    output = run(make_llm(scripted), num_generations=3)
    assert output["generations"] == ["first", "more", "more"]
    assert output["statistics"] == {"input_tokens": [5, 5, 5], "output_tokens": [2, 3, 3]}
    assert len(scripted.requests) == 3
    assert scripted.requests[0].body["n"] == 3
    assert all("n" not in r.body for r in scripted.requests[1:])


def test_without_n_support_requests_run_concurrently(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(delay=0.3, body=completion(["x"], completion_tokens=4).body))
    started = time.monotonic()
    output = run(make_llm(scripted, supports_n=False), num_generations=3)
    assert time.monotonic() - started < 0.8  # three 0.3 s requests at once, not one after another
    assert output["generations"] == ["x", "x", "x"]
    assert output["statistics"]["output_tokens"] == [4, 4, 4]
    assert len(scripted.requests) == 3
    assert all("n" not in r.body for r in scripted.requests)


def test_missing_usage_leaves_statistics_empty(scripted: ScriptedServer) -> None:
    body = completion(["x"]).body
    assert isinstance(body, dict)
    scripted.answer(Reply(body={k: v for k, v in body.items() if k != "usage"}))
    output = run(make_llm(scripted))
    assert output["generations"] == ["x"]
    assert output["statistics"] == {}


def test_split_evenly() -> None:
    assert split_evenly(10, 3) == [4, 3, 3]
    assert split_evenly(2, 4) == [1, 1, 0, 0]
    assert split_evenly(9, 1) == [9]
    assert sum(split_evenly(101, 7)) == 101


# -- key, client, plugin ---------------------------------------------------------------------


def test_missing_key_fails_at_load_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    llm = OpenAILLM(model="gpt-4o-mini")
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
        llm.load()
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
        OpenAILLM(model="m", api_key="").load()


def test_key_from_the_environment(scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    scripted.answer(completion(["ok"]))
    llm = OpenAILLM(model="m", base_url=f"{scripted.url}/v1")
    assert run(llm)["generations"] == ["ok"]
    assert scripted.requests[0].headers["authorization"] == "Bearer sk-from-env"
    assert "sk-from-env" not in json.dumps(llm.dump())


def test_uses_the_aiohttp_transport_and_closes_it(scripted: ScriptedServer) -> None:
    import openai

    scripted.answer(completion(["ok"]))
    llm = make_llm(scripted, client="sdk")
    llm.load()
    llm.generate([CHAT])
    [client] = llm._clients.values()
    transport = client._client  # the SDK's HTTP client
    assert isinstance(transport, openai.DefaultAioHttpClient)
    assert client.max_retries == 0
    llm.unload()
    assert transport.is_closed
    assert not llm._clients


def test_direct_client_needs_no_sdk_and_closes_its_session(scripted: ScriptedServer) -> None:
    scripted.answer(completion(["ok"]))
    llm = make_llm(scripted, client="direct")
    llm.load()
    assert llm.generate([CHAT])[0]["generations"] == ["ok"]
    [client] = llm._clients.values()
    assert scripted.requests[0].headers["authorization"] == f"Bearer {KEY}"
    llm.unload()
    assert client.is_closed
    code = (
        "import sys; from taskloom_openai import OpenAILLM; llm = OpenAILLM(model='m', api_key='k'); llm.load(); "
        "assert 'openai' not in sys.modules; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "ok", result.stderr


def test_async_callers_get_a_client_on_their_own_loop(scripted: ScriptedServer) -> None:
    import asyncio

    scripted.answer(completion(["ok"]))
    llm = make_llm(scripted)
    llm.load()

    async def main() -> list[Any]:
        outputs = await llm.agenerate_batch([CHAT, CHAT])
        await llm.aclose()
        return outputs

    assert [o["generations"] for o in asyncio.run(main())] == [["ok"], ["ok"]]
    assert llm.generate([CHAT])[0]["generations"] == ["ok"]  # the sync facade's own loop and client
    llm.unload()


def test_registered_and_import_light() -> None:
    assert isinstance(taskloom.get_llm("openai", model="m", api_key="k"), OpenAILLM)
    code = "import sys, taskloom_openai.plugin; assert 'openai' not in sys.modules; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "ok", result.stderr
