"""The provider of docs/writing-an-llm-plugin.md, as an installed package, does what the page says.

examples/taskloom-acme-chat is installed (editable) like any third-party plugin, so these tests
go through its entry point, not an import of the file. Its success paths run against a real
llama.cpp server; the failures a real server will not produce on demand (429 with Retry-After,
a storm of 500s, a server that echoes the key) come from the scripted loopback server.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from typing import Any, Literal

import pytest
from llama_server_fixture import LlamaServer  # scripts/ is on sys.path (the repo's conftest.py)
from pydantic import BaseModel

from taskloom import get_llm, get_task, load_llm
from taskloom.errors import AuthenticationError
from taskloom.registry import get_registry
from taskloom.retry import RetryPolicy
from taskloom.testing.conformance import LLMConformance
from taskloom.testing.http import Reply, ScriptedServer

CHAT = [{"role": "user", "content": "What is the capital of Spain?"}]
KEY = "sk-acme-test-0123456789"
FAST = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05)


def completion(*texts: str, prompt_tokens: int = 7, completion_tokens: int = 3) -> dict[str, Any]:
    """An OpenAI-style chat completion body, the shape Acme's API answers with."""
    return {
        "choices": [{"index": i, "message": {"role": "assistant", "content": t}} for i, t in enumerate(texts)],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


def acme(**fields: Any) -> Any:
    fields.setdefault("model", "acme-small")
    fields.setdefault("retry", FAST)
    return get_llm("acme-chat", **fields)


# -- the installed package --------------------------------------------------------------------------


def test_entry_point_names_the_module() -> None:
    [point] = [ep for ep in entry_points(group="taskloom") if ep.name == "acme-chat"]
    assert point.value == "taskloom_acme_chat"
    assert point.dist is not None and point.dist.name == "taskloom-acme-chat"


def test_get_llm_resolves_through_the_entry_point() -> None:
    llm = acme()
    assert type(llm).__name__ == "AcmeLLM"
    assert type(llm).__module__ == "taskloom_acme_chat"
    registration = get_registry().resolve("llm", "acme-chat")
    assert registration.package == "taskloom-acme-chat"
    assert registration.plugin == "acme-chat"
    assert llm.model_name == "acme-small"


def test_lookup_imports_only_this_plugin() -> None:
    # The entry point is named like the LLM, so asking for it loads this plugin and no other.
    code = textwrap.dedent(
        """
        import sys
        from taskloom import get_llm
        get_llm("acme-chat", model="m")
        loaded = sorted(m for m in sys.modules if m.startswith("taskloom_"))
        print(",".join(loaded))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "taskloom_acme_chat"


def test_dump_names_it_by_its_registry_name() -> None:
    llm = acme(api_key=KEY, generation_kwargs={"temperature": 0.5})
    data = llm.dump()
    assert data["type"] == "acme-chat"
    assert KEY not in json.dumps(data)
    rebuilt = load_llm(data)
    assert rebuilt.dump() == data


def test_its_options_are_validated_and_described() -> None:
    info = {o["name"]: o for o in acme().options_info()}
    assert info["max_new_tokens"]["default"] == 256
    assert info["temperature"]["range"] == ">= 0, <= 2"
    assert info["presence_penalty"]["description"] == "Acme's own option."
    with pytest.raises(ValueError, match="temperature"):
        acme(generation_kwargs={"temperature": 3})
    with pytest.raises(ValueError, match="unknown option 'temprature'"):
        acme(generation_kwargs={"temprature": 0.5})


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACME_API_KEY", raising=False)
    with pytest.raises(AuthenticationError, match="ACME_API_KEY"):
        acme().load()


def test_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_API_KEY", KEY)
    with ScriptedServer([Reply(body=completion("Madrid."))]) as server:
        llm = acme(base_url=server.url)
        try:
            [output] = llm.generate([CHAT])
        finally:
            llm.unload()
    assert output["generations"] == ["Madrid."]
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"


# -- against a real llama.cpp server ------------------------------------------------------------------


def served(server: LlamaServer, **fields: Any) -> Any:
    return acme(model="smollm2", base_url=server.base_url + "/v1", api_key="none", **fields)


@pytest.mark.llama_server
class TestAcmeConformance(LLMConformance):
    generation_kwargs = {"max_new_tokens": 16}

    @pytest.fixture
    def llm(self, llama_server: LlamaServer) -> Any:
        return served(llama_server)


@pytest.mark.llama_server
def test_real_server_answers_with_token_counts(llama_server: LlamaServer) -> None:
    llm = served(llama_server)
    try:
        [output] = llm.generate([CHAT], num_generations=2, max_new_tokens=16, temperature=0.8, presence_penalty=0.5)
    finally:
        llm.unload()
    assert "error" not in output and "errors" not in output
    assert all(isinstance(t, str) and t.strip() for t in output["generations"])
    assert all(n > 0 for n in output["statistics"]["input_tokens"] + output["statistics"]["output_tokens"])
    assert max(output["statistics"]["output_tokens"]) <= 16


class Verdict(BaseModel):
    answer: Literal["yes", "no"]
    sure: bool


@pytest.mark.llama_server
def test_structured_output_against_the_real_server(llama_server: LlamaServer) -> None:
    llm = served(llama_server)
    chat = [{"role": "user", "content": "Is Madrid in Spain? Answer in JSON."}]
    colour = {
        "type": "object",
        "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
        "required": ["colour"],
    }
    try:
        # A pydantic model (turned into its schema by core) and a plain JSON schema.
        [verdict] = llm.generate([chat], structured_output=Verdict, max_new_tokens=64)
        [picked] = llm.generate([[{"role": "user", "content": "Pick a colour."}]], structured_output=colour)
    finally:
        llm.unload()
    Verdict.model_validate(json.loads(verdict["generations"][0]))
    assert json.loads(picked["generations"][0])["colour"] in {"red", "green", "blue"}


@pytest.mark.llama_server
def test_structured_generation_task_against_the_real_server(llama_server: LlamaServer) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}}, "required": ["city"]}
    task = get_task(
        "structured-generation",
        llm=served(llama_server),
        template="Name the capital of {{ country }} as JSON.",
        output_schema=schema,
    )
    task.load()
    try:
        [row] = next(task.process([{"country": "Spain"}]))
    finally:
        task.unload()
    assert isinstance(row["city"], str) and row["city"]
    assert row["model_name"] == "smollm2"


# -- scripted HTTP: what a real server will not do on demand --------------------------------------------


def test_429_with_retry_after_then_success() -> None:
    script = [Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"}), Reply(body=completion("Madrid."))]
    with ScriptedServer(script) as server:
        llm = acme(base_url=server.url, api_key=KEY, retry=RetryPolicy(max_attempts=3, initial_delay=0))
        try:
            [output] = llm.generate([CHAT])
        finally:
            llm.unload()
    assert output == {"generations": ["Madrid."], "statistics": {"input_tokens": [7], "output_tokens": [3]}}
    first, second = server.requests
    assert second.at - first.at >= 0.95, "the retry must wait for Retry-After"
    assert first.body == second.body


def test_500_storm_exhausts_retries_and_is_recorded_on_the_row() -> None:
    with ScriptedServer([Reply(500, {"error": {"message": "the kettle is on fire"}})]) as server:
        task = get_task("text-generation", llm=acme(base_url=server.url, api_key=KEY))
        task.load()
        try:
            rows = next(task.process([{"instruction": "Capital of Spain?"}]))
        finally:
            task.unload()
    assert len(server.requests) == FAST.max_attempts
    [row] = rows
    assert row["generation"] is None
    error = row["distilabel_metadata"]["error_text-generation"]
    assert error.startswith("ServerError:")
    assert "HTTP 500" in error and "the kettle is on fire" in error


def test_one_generation_failing_for_good_keeps_the_others() -> None:
    # Each generation is its own request (Acme takes no n): the third to arrive always fails.
    arrived: list[int] = []

    def answer(body: Any) -> Reply:
        arrived.append(1)
        if len(arrived) <= 2:
            return Reply(body=completion("Madrid."))
        return Reply(500, {"error": {"message": "busy"}})

    with ScriptedServer([answer]) as server:
        llm = acme(base_url=server.url, api_key=KEY)
        try:
            [output] = llm.generate([CHAT], num_generations=3)
        finally:
            llm.unload()
    assert sorted(output["generations"], key=str) == ["Madrid.", "Madrid.", None]
    assert "error" not in output
    errors = output["errors"]
    failed = [i for i, text in enumerate(output["generations"]) if text is None]
    assert [i for i, e in enumerate(errors) if e] == failed
    assert "ServerError" in str(errors[failed[0]])
    assert output["statistics"]["output_tokens"][failed[0]] == 0


def test_the_key_never_appears_in_errors_logs_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    echo = {"error": {"message": f"bad request from key {KEY}"}}
    script = [
        Reply(400, echo),  # a refusal that quotes the key: recorded on the row
        Reply(500, echo),  # a storm that quotes it: retried, then recorded
        Reply(500, echo),
        Reply(500, echo),
        Reply(200, f"not json, but {KEY}", content_type="text/plain"),  # a garbage body
        Reply(200, f"not json, but {KEY}", content_type="text/plain"),
        Reply(200, f"not json, but {KEY}", content_type="text/plain"),
        Reply(401, echo),  # stops the run
    ]
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)
    with ScriptedServer(script) as server:
        llm = acme(base_url=server.url, api_key=KEY)
        try:
            for _ in range(3):
                [output] = llm.generate([CHAT])
                assert output["generations"] == [None]
                seen.append(output["error"])
            with pytest.raises(AuthenticationError) as caught:
                llm.generate([CHAT])
            seen.append(str(caught.value))
        finally:
            llm.unload()
    assert [s.split(":")[0] for s in seen[:3]] == ["BadRequestError", "ServerError", "ServerError"]
    assert "malformed body" in seen[2]
    assert "HTTP 401" in seen[3] and "ACME_API_KEY" in seen[3]
    assert all("***" in s for s in seen[:3])
    shown = "\n".join([*seen, caplog.text, repr(llm), str(llm), json.dumps(llm.dump())])
    assert KEY not in shown
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in server.requests)  # it was sent, only sent
