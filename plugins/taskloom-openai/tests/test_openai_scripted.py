"""OpenAILLM against a scripted loopback server: failures, retries, request shapes, statistics.

A real server does not produce 429s, 5xx, timeouts or malformed bodies on demand, so these are
scripted here; the success paths are also checked against llama-server in test_openai_llama_server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from typing import Any, Literal

import pytest
from openai_scripted_http import Reply, ScriptedServer, completion
from pydantic import BaseModel
from taskloom_openai import OpenAILLM
from taskloom_openai.llm import response_format

import taskloom
from taskloom.errors import AuthenticationError
from taskloom.plugin import OptionError
from taskloom.retry import RetryPolicy

CHAT = [{"role": "user", "content": "Hi"}]
KEY = "sk-test-very-secret-key-123"


def make_llm(server: ScriptedServer, **fields: Any) -> OpenAILLM:
    fields.setdefault("retry", RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05))
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


def test_a_storm_of_rate_limits_is_recorded_once_the_tries_run_out(scripted: ScriptedServer) -> None:
    scripted.answer(Reply(429, {"error": {"message": "slow down"}}, {"retry-after-ms": "20"}))
    output = run(make_llm(scripted))
    assert output["generations"] == [None]
    assert "RateLimitError" in output["error"]
    assert len(scripted.requests) == 3


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
    assert "boom" in output["error"]
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
        b'{"choices": ["nope"]}',
        b'{"choices": []}',
        b"[1, 2]",
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
    assert "***" in str(caught.value)
    assert "OPENAI_API_KEY" in str(caught.value)  # says where the key came from


@pytest.mark.parametrize("status", [400, 404, 422])
def test_bad_request_is_recorded_without_retry(scripted: ScriptedServer, status: int) -> None:
    scripted.answer(Reply(status, {"error": {"message": "prompt too long"}}))
    output = run(make_llm(scripted))
    assert output["generations"] == [None]
    assert "BadRequestError" in output["error"]
    assert "prompt too long" in output["error"]
    assert len(scripted.requests) == 1


# -- the key never shows -----------------------------------------------------------------------


def test_the_key_never_appears_in_an_error_a_log_or_a_repr(
    scripted: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    echoes = [
        Reply(400, {"error": {"message": f"bad key {KEY}"}}),
        Reply(500, {"error": f"upstream said {KEY}"}),
        Reply(502, f"<html>gateway saw Bearer {KEY}</html>", content_type="text/html"),
        Reply(200, {"object": "chat.completion", "echo": KEY}),  # no choices: malformed
        Reply(200, '{"echo": "' + KEY),  # not JSON
    ]
    llm = make_llm(scripted, retry=RetryPolicy(max_attempts=2, initial_delay=0.01))
    shown = []
    for echo in echoes:
        scripted.answer(echo)
        output = run(llm)
        assert output["generations"] == [None]
        shown.append(output["error"])
    shown += [repr(llm), str(llm), json.dumps(llm.dump()), repr(llm.runtime_parameters_info()), caplog.text]
    assert len(scripted.requests) == 2  # the last case was really sent (and retried)
    for text in shown:
        assert KEY not in text
    assert all("***" in error for error in shown[:5])


# -- request shape ----------------------------------------------------------------------------


def test_generation_options_are_mapped(scripted: ScriptedServer) -> None:
    scripted.answer(completion(["ok"]))
    run(
        make_llm(scripted),
        temperature=0.5,
        top_p=0.9,
        max_new_tokens=7,
        stop=["\n"],
        seed=3,
        frequency_penalty=0.5,
        presence_penalty=-1.0,
    )
    sent = scripted.requests[0].body
    assert scripted.requests[0].path == "/v1/chat/completions"
    assert sent == {
        "model": "scripted",
        "messages": CHAT,
        "temperature": 0.5,
        "top_p": 0.9,
        "max_tokens": 7,
        "stop": ["\n"],
        "seed": 3,
        "frequency_penalty": 0.5,
        "presence_penalty": -1.0,
    }


def test_defaults_and_unset_options(scripted: ScriptedServer) -> None:
    scripted.answer(completion(["ok"]))
    run(make_llm(scripted))
    assert scripted.requests[0].body == {"model": "scripted", "messages": CHAT, "max_tokens": 512}
    scripted.answer(completion(["ok"]))
    run(make_llm(scripted), max_new_tokens=None)
    assert set(scripted.requests[0].body) == {"model", "messages"}


@pytest.mark.parametrize(
    ("option", "value"),
    [("temperature", 2.5), ("temperature", -0.1), ("frequency_penalty", 3), ("presence_penalty", -2.5)],
)
def test_options_out_of_range_are_refused_before_any_request(
    scripted: ScriptedServer, option: str, value: float
) -> None:
    llm = make_llm(scripted)
    llm.load()
    try:
        with pytest.raises(OptionError, match=option):
            llm.generate([CHAT], **{option: value})
    finally:
        llm.unload()
    with pytest.raises(ValueError, match=option):
        make_llm(scripted, generation_kwargs={option: value})
    assert scripted.requests == []


def test_unknown_option_is_refused(scripted: ScriptedServer) -> None:
    with pytest.raises(ValueError, match="logit_bais"):
        make_llm(scripted, generation_kwargs={"logit_bais": {}})


def test_options_are_described() -> None:
    info = {option["name"]: option for option in OpenAILLM.options_info()}
    assert info["temperature"]["range"] == ">= 0, <= 2"
    assert info["max_new_tokens"]["default"] == 512
    assert info["frequency_penalty"]["range"] == info["presence_penalty"]["range"] == ">= -2, <= 2"
    assert all(option["description"] for option in info.values())


def test_max_tokens_parameter(scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted.answer(completion(["ok"]))
    run(make_llm(scripted, max_tokens_parameter="max_completion_tokens"), max_new_tokens=9)
    sent = scripted.requests[0].body
    assert sent["max_completion_tokens"] == 9
    assert "max_tokens" not in sent
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert OpenAILLM(model="gpt-4o-mini").max_tokens_field() == "max_completion_tokens"
    assert OpenAILLM(model="m", base_url="http://127.0.0.1:1/v1").max_tokens_field() == "max_tokens"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    assert OpenAILLM(model="m").max_tokens_field() == "max_tokens"


def test_base_url_from_the_environment(scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"{scripted.url}/v1/")
    scripted.answer(completion(["ok"]))
    assert run(OpenAILLM(model="m", api_key=KEY))["generations"] == ["ok"]
    assert scripted.requests[0].path == "/v1/chat/completions"


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
    schema = rebuilt.generation_kwargs["structured_output"]
    assert response_format(schema) == response_format(Verdict.model_json_schema())
    assert KEY not in json.dumps(data)


# -- num_generations and statistics ---------------------------------------------------------------


def test_n_in_one_request_with_usage_split(scripted: ScriptedServer) -> None:
    scripted.answer(completion(["a", "b", "c"], prompt_tokens=11, completion_tokens=10))
    output = run(make_llm(scripted), num_generations=3)
    assert output["generations"] == ["a", "b", "c"]
    # One request's usage, split over its choices so that the sums are what the server counted.
    assert output["statistics"] == {"input_tokens": [4, 4, 3], "output_tokens": [4, 3, 3]}
    assert len(scripted.requests) == 1
    assert scripted.requests[0].body["n"] == 3


def test_choices_come_back_in_index_order(scripted: ScriptedServer) -> None:
    body = completion(["a", "b"]).body
    assert isinstance(body, dict)
    body["choices"].reverse()
    scripted.answer(Reply(body=body))
    assert run(make_llm(scripted), num_generations=2)["generations"] == ["a", "b"]


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


def test_one_failed_request_fails_only_its_generation(scripted: ScriptedServer) -> None:
    scripted.answer(
        completion(["a"], completion_tokens=4),
        Reply(400, {"error": {"message": "flagged by the filter"}}),
        completion(["c"], completion_tokens=4),
    )
    output = run(make_llm(scripted, supports_n=False), num_generations=3)
    texts, errors = output["generations"], output["errors"]
    assert "error" not in output  # the row is not failed as a whole
    [failed] = [i for i, text in enumerate(texts) if text is None]
    assert sorted(t for t in texts if t is not None) == ["a", "c"]
    assert "BadRequestError" in errors[failed] and "flagged by the filter" in errors[failed]
    assert [e for i, e in enumerate(errors) if i != failed] == [None, None]
    assert output["statistics"]["output_tokens"][failed] == 0
    assert sum(output["statistics"]["output_tokens"]) == 8
    assert len(scripted.requests) == 3  # the bad request was not retried, the others not repeated


def test_a_failed_fill_up_request_fails_only_its_generation(scripted: ScriptedServer) -> None:
    scripted.answer(
        completion(["first"]),
        completion(["more"]),
        Reply(400, {"error": {"message": "no more"}}),
    )
    output = run(make_llm(scripted), num_generations=3)
    assert output["generations"][0] == "first"
    assert set(output["generations"][1:]) == {"more", None}
    failed = output["generations"].index(None)
    assert "no more" in output["errors"][failed]
    assert output["errors"].count(None) == 2


def test_missing_usage_counts_zero(scripted: ScriptedServer) -> None:
    body = completion(["x"]).body
    assert isinstance(body, dict)
    scripted.answer(Reply(body={k: v for k, v in body.items() if k != "usage"}))
    output = run(make_llm(scripted))
    assert output["generations"] == ["x"]
    assert output["statistics"] == {"input_tokens": [0], "output_tokens": [0]}


def test_a_choice_without_text_is_none(scripted: ScriptedServer) -> None:
    body = completion(["x", "y"]).body
    assert isinstance(body, dict)
    body["choices"][1]["message"] = {"role": "assistant", "content": None, "refusal": "I can't."}
    scripted.answer(Reply(body=body))
    assert run(make_llm(scripted), num_generations=2)["generations"] == ["x", None]


# -- key, loop, plugin ---------------------------------------------------------------------------


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


def test_live_requests_never_import_the_sdk(scripted: ScriptedServer) -> None:
    scripted.answer(completion(["ok"]))
    code = (
        "import sys; from taskloom_openai import OpenAILLM; "
        f"llm = OpenAILLM(model='m', api_key='k', base_url='{scripted.url}/v1'); llm.load(); "
        "assert llm.generate([[{'role': 'user', 'content': 'Hi'}]])[0]['generations'] == ['ok']; llm.unload(); "
        "assert 'openai' not in sys.modules; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "ok", result.stderr


def test_async_callers_get_a_session_on_their_own_loop(scripted: ScriptedServer) -> None:
    scripted.answer(completion(["ok"]))
    llm = make_llm(scripted)
    llm.load()

    async def main() -> list[Any]:
        outputs = await llm.agenerate_batch([CHAT, CHAT])
        await llm.aclose()
        return outputs

    assert [o["generations"] for o in asyncio.run(main())] == [["ok"], ["ok"]]
    assert llm.generate([CHAT])[0]["generations"] == ["ok"]  # the sync facade's own loop and session
    llm.unload()


def test_registered_and_import_light() -> None:
    assert isinstance(taskloom.get_llm("openai", model="m", api_key="k"), OpenAILLM)
    code = "import sys, taskloom_openai.plugin; assert 'openai' not in sys.modules; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "ok", result.stderr
