"""OpenAILLM against a real llama.cpp ``llama-server`` (SmolLM2-135M-Instruct) on loopback."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel
from taskloom_openai import OpenAILLM

from taskloom import get_llm, get_task
from taskloom.retry import RetryPolicy
from taskloom.testing.conformance import LLMConformance

pytestmark = pytest.mark.llama_server

SHORT = {"max_new_tokens": 32}
CHAT = [{"role": "user", "content": "What is the capital of Spain?"}]


def make_llm(server: Any, **fields: Any) -> OpenAILLM:
    fields.setdefault("retry", RetryPolicy(max_attempts=2, initial_delay=0.1))
    return OpenAILLM(model="smollm2", base_url=server.openai_base_url, api_key="none", **fields)


@pytest.fixture
def llm(llama_server: Any) -> Iterator[OpenAILLM]:
    llm = make_llm(llama_server)
    llm.load()
    yield llm
    llm.unload()


def check(output: Any, num_generations: int) -> None:
    assert "error" not in output, output.get("error")
    assert len(output["generations"]) == num_generations
    assert all(isinstance(g, str) and g.strip() for g in output["generations"])
    stats = output["statistics"]
    assert len(stats["input_tokens"]) == len(stats["output_tokens"]) == num_generations
    assert all(n > 0 for n in stats["input_tokens"] + stats["output_tokens"])


def test_plain_generation(llm: OpenAILLM) -> None:
    [output] = llm.generate([CHAT], **SHORT)
    check(output, 1)
    assert output["statistics"]["output_tokens"][0] <= 32


def test_num_generations_with_n(llm: OpenAILLM) -> None:
    outputs = llm.generate([CHAT, CHAT], num_generations=3, temperature=1.0, **SHORT)
    for output in outputs:
        check(output, 3)


def test_num_generations_by_concurrent_requests(llama_server: Any) -> None:
    # Without n, even more generations than the server has slots (5 > -np 4) come back.
    llm = make_llm(llama_server, supports_n=False)
    llm.load()
    try:
        [output] = llm.generate([CHAT], num_generations=5, max_new_tokens=8)
    finally:
        llm.unload()
    check(output, 5)


def test_system_prompt(llm: OpenAILLM) -> None:
    short = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is the treasure?"}]
    long = [
        {"role": "system", "content": "You are a pirate captain of the seven seas. Answer in one short sentence."},
        short[1],
    ]
    [brief, pirate] = llm.generate([short, long], **SHORT)
    check(brief, 1)
    check(pirate, 1)
    # The system message reached the prompt: the server counted its extra tokens.
    assert pirate["statistics"]["input_tokens"][0] > brief["statistics"]["input_tokens"][0]


class Verdict(BaseModel):
    answer: Literal["yes", "no"]
    sure: bool


def test_structured_output_from_pydantic(llm: OpenAILLM) -> None:
    chat = [{"role": "user", "content": "Is Madrid in Spain? Answer in JSON."}]
    outputs = llm.generate([chat, chat], num_generations=2, structured_output=Verdict, max_new_tokens=64)
    for output in outputs:
        assert "error" not in output
        for text in output["generations"]:
            Verdict.model_validate(json.loads(text))


def test_structured_output_from_a_dict(llm: OpenAILLM) -> None:
    schema = {
        "title": "Colour",
        "type": "object",
        "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}, "count": {"type": "integer"}},
    }
    [output] = llm.generate(
        [[{"role": "user", "content": "Pick a colour and a count, as JSON."}]],
        structured_output=schema,
        max_new_tokens=64,
    )
    data = json.loads(output["generations"][0])
    assert set(data) == {"colour", "count"}
    assert data["colour"] in {"red", "green", "blue"}
    assert isinstance(data["count"], int)


def raw_usage(server: Any, body: dict[str, Any]) -> dict[str, int]:
    request = urllib.request.Request(
        f"{server.openai_base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": "Bearer none"},
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        usage: dict[str, int] = json.loads(response.read())["usage"]
        return usage


def test_statistics_equal_the_servers_usage(llm: OpenAILLM, llama_server: Any) -> None:
    # Greedy and seeded, so the same request gives the same answer and the same usage.
    kwargs = {"temperature": 0.0, "seed": 7, "max_new_tokens": 24}
    [output] = llm.generate([CHAT], **kwargs)
    usage = raw_usage(
        llama_server,
        {"model": "smollm2", "messages": CHAT, "temperature": 0.0, "seed": 7, "max_tokens": 24},
    )
    statistics = dict(output["statistics"])
    # The server's prompt cache served part of the same prompt, asked just before: reported apart
    # (cached prompt tokens are billed lower), and part of the input all the same.
    cached = statistics.pop("cached_input_tokens", 0)
    assert 0 <= cached <= usage["prompt_tokens"]
    assert statistics == {
        "input_tokens": [usage["prompt_tokens"]],
        "output_tokens": [usage["completion_tokens"]],
    }


def test_statistics_with_n_sum_to_the_servers_usage(llm: OpenAILLM, llama_server: Any) -> None:
    kwargs = {"temperature": 0.0, "seed": 7, "max_new_tokens": 24}
    [output] = llm.generate([CHAT], num_generations=2, **kwargs)
    usage = raw_usage(
        llama_server,
        {"model": "smollm2", "messages": CHAT, "temperature": 0.0, "seed": 7, "max_tokens": 24, "n": 2},
    )
    # One response's usage, split over its two choices: the sums are what the server counted.
    assert sum(output["statistics"]["input_tokens"]) == usage["prompt_tokens"]
    assert sum(output["statistics"]["output_tokens"]) == usage["completion_tokens"]


def test_max_completion_tokens_is_understood(llama_server: Any) -> None:
    llm = make_llm(llama_server, max_tokens_parameter="max_completion_tokens")
    llm.load()
    try:
        [output] = llm.generate([CHAT], max_new_tokens=3)
    finally:
        llm.unload()
    assert output["statistics"]["output_tokens"] == [3]


def test_bad_request_from_the_real_server_is_recorded(llm: OpenAILLM) -> None:
    # llama-server refuses n above its parallel slots (the fixture starts it with -np 4) with a 400.
    [output] = llm.generate([CHAT], num_generations=5, max_new_tokens=4)
    assert output["generations"] == [None] * 5
    assert "BadRequestError" in output["error"]
    assert "'n'" in output["error"]


def test_text_generation_task_end_to_end(llama_server: Any) -> None:
    llm = get_llm("openai", model="smollm2", base_url=llama_server.openai_base_url, api_key="none")
    llm.set_runtime_parameters({"generation_kwargs": SHORT})
    task = get_task("text-generation", llm=llm, num_generations=2)
    task.load()
    try:
        rows = [
            row
            for batch in task.process([{"instruction": "Name a fruit."}, {"instruction": "Say hi."}])
            for row in batch
        ]
    finally:
        task.unload()
    assert len(rows) == 4
    for row in rows:
        assert isinstance(row["generation"], str) and row["generation"].strip()
        assert row["model_name"] == "smollm2"
        stats = row["distilabel_metadata"]["statistics_text-generation"]
        assert stats["input_tokens"] > 0 and stats["output_tokens"] > 0


class TestOpenAIConformance(LLMConformance):
    generation_kwargs = {"max_new_tokens": 16}

    @pytest.fixture
    def llm(self, llama_server: Any) -> OpenAILLM:
        return make_llm(llama_server)
