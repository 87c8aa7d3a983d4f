"""Against a real llama.cpp ``llama-server`` (SmolLM2-135M): the success paths, end to end.

The LLM is pointed at the server root (``base_url``), the way a TGI server or an Inference
Endpoint is used; the plugin posts to ``<root>/v1/chat/completions``.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from llama_server import LlamaServer
from pydantic import BaseModel
from taskloom_huggingface import HuggingFaceLLM

from taskloom import get_llm, get_task
from taskloom.testing.conformance import LLMConformance

pytestmark = pytest.mark.llama_server

CHAT = [{"role": "user", "content": "What is the capital of Spain?"}]
SHORT = {"max_new_tokens": 16}


@pytest.fixture
def llm(llama_server: LlamaServer) -> Any:
    llm = HuggingFaceLLM(base_url=llama_server.base_url, api_key="none")
    llm.load()
    yield llm
    llm.unload()


def raw_chat(server: LlamaServer, body: dict[str, Any]) -> dict[str, Any]:
    """The same request, sent with urllib: what the server itself reports."""
    request = urllib.request.Request(
        f"{server.openai_base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_plain_generation(llm: HuggingFaceLLM) -> None:
    [out] = llm.generate([CHAT], **SHORT)
    [text] = out["generations"]
    assert isinstance(text, str) and text.strip()
    assert out["statistics"]["input_tokens"][0] > 0
    assert 0 < out["statistics"]["output_tokens"][0] <= SHORT["max_new_tokens"]


def test_base_url_ending_in_v1(llama_server: LlamaServer) -> None:
    llm = HuggingFaceLLM(base_url=llama_server.openai_base_url, api_key="none")
    llm.load()
    try:
        [out] = llm.generate([CHAT], **SHORT)
    finally:
        llm.unload()
    assert out["generations"][0]


def test_num_generations(llm: HuggingFaceLLM) -> None:
    outputs = llm.generate([CHAT], num_generations=3, temperature=1.0, **SHORT)
    for out in outputs:
        assert len(out["generations"]) == 3
        assert all(isinstance(g, str) and g.strip() for g in out["generations"])
        assert len(out["statistics"]["output_tokens"]) == 3
        assert "error" not in out and "errors" not in out


def test_seeded_generation_i_is_the_servers_answer_for_seed_plus_i(
    llama_server: LlamaServer, llm: HuggingFaceLLM
) -> None:
    chat = [{"role": "user", "content": "Write one sentence about the sea."}]
    [out] = llm.generate([chat], num_generations=3, temperature=1.0, seed=11, **SHORT)
    for i, text in enumerate(out["generations"]):
        raw = raw_chat(llama_server, {"messages": chat, "max_tokens": 16, "temperature": 1.0, "seed": 11 + i})
        assert text == raw["choices"][0]["message"]["content"], f"generation {i} was not sampled with seed {11 + i}"
    assert len(set(out["generations"])) > 1, "seeds seed + i should sample different answers"


def test_system_prompt_reaches_the_model(llama_server: LlamaServer, llm: HuggingFaceLLM) -> None:
    pirate = "You are a pirate captain sailing the seven seas. Answer every question like a pirate would, matey."
    system = [{"role": "system", "content": pirate}, *CHAT]
    [with_system] = llm.generate([system], temperature=0, seed=0, **SHORT)
    [without] = llm.generate([CHAT], temperature=0, seed=0, **SHORT)
    assert with_system["generations"][0]
    # The system message is in the prompt the server counted (SmolLM2's template adds a shorter
    # default system message when there is none, hence a long one here).
    assert with_system["statistics"]["input_tokens"][0] > without["statistics"]["input_tokens"][0]
    raw = raw_chat(llama_server, {"messages": system, "max_tokens": 16, "temperature": 0, "seed": 0})
    assert with_system["statistics"]["input_tokens"][0] == raw["usage"]["prompt_tokens"]


def test_statistics_equal_the_servers_usage(llama_server: LlamaServer, llm: HuggingFaceLLM) -> None:
    [out] = llm.generate([CHAT], temperature=0, seed=3, **SHORT)
    raw = raw_chat(llama_server, {"messages": CHAT, "max_tokens": 16, "temperature": 0, "seed": 3})
    assert out["generations"][0] == raw["choices"][0]["message"]["content"]  # same greedy request
    assert out["statistics"] == {
        "input_tokens": [raw["usage"]["prompt_tokens"]],
        "output_tokens": [raw["usage"]["completion_tokens"]],
    }


class City(BaseModel):
    city: str
    country: str
    population: int


def test_structured_output_is_valid_json_for_the_schema(llm: HuggingFaceLLM) -> None:
    chat = [{"role": "user", "content": "Describe Madrid as JSON with city, country and population."}]
    [out] = llm.generate([chat], num_generations=2, structured_output=City, max_new_tokens=64, temperature=0.7, seed=5)
    for text in out["generations"]:
        City.model_validate(json.loads(text or ""))


def test_structured_output_from_a_dict_schema(llm: HuggingFaceLLM) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    chat = [{"role": "user", "content": "Is Madrid in Spain? Reply in JSON."}]
    [out] = llm.generate([chat], structured_output=schema, max_new_tokens=32)
    assert json.loads(out["generations"][0] or "")["answer"] in ("yes", "no")


def test_text_generation_task_end_to_end(llama_server: LlamaServer) -> None:
    llm = get_llm(
        "huggingface", base_url=llama_server.base_url, api_key="none", generation_kwargs={"max_new_tokens": 8}
    )
    task = get_task("text-generation", llm=llm, num_generations=2)
    task.load()
    try:
        rows = [
            row
            for batch in task.process([{"instruction": "Name a colour."}, {"instruction": "Say hi."}])
            for row in batch
        ]
    finally:
        task.unload()
    assert len(rows) == 4
    for row in rows:
        assert isinstance(row["generation"], str) and row["generation"].strip()
        assert row["model_name"] == llama_server.base_url


class TestHuggingFaceConformance(LLMConformance):
    generation_kwargs = {"max_new_tokens": 16}

    @pytest.fixture
    def llm(self, llama_server: LlamaServer) -> HuggingFaceLLM:
        return HuggingFaceLLM(base_url=llama_server.base_url, api_key="hf_conformance_secret")
