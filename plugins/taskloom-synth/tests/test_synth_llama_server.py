"""The pack against a real llama.cpp server (SmolLM2-135M) through taskloom-openai.

SmolLM2 does not answer a ``tools`` option with tool calls, even with ``--jinja`` (see the shared
notes on the local server), so function-calling runs with ``native_tools=False``: the tools go in
the prompt and the answer is held to a JSON schema by the server's ``response_format``. Magpie
and conversation run against the same server in the openai plugin's raw-text tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from taskloom import Pipeline, get_llm, get_task
from taskloom.retry import RetryPolicy

pytestmark = pytest.mark.llama_server

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}},
            "required": ["city"],
        },
    },
}


def test_function_calling_with_the_tools_in_the_prompt_and_a_schema(llama_server: Any, tmp_path: Path) -> None:
    llm = get_llm(
        "openai",
        model="smollm2",
        base_url=llama_server.openai_base_url,
        api_key="none",
        native_tools=False,
        retry=RetryPolicy(max_attempts=2, initial_delay=0.1),
        generation_kwargs={"max_new_tokens": 96, "temperature": 0.2},
    )
    task = get_task("function-calling", llm=llm, tools=[WEATHER])
    rows = [{"instruction": "What is the weather in Lisbon right now?"}, {"topic": "a trip to Oslo"}]
    result = Pipeline(task, source=rows, name="tools").run(output=tmp_path, progress=None)
    made = list(result.rows())
    assert len(made) == 2
    for row in made:
        assert row["tools"] and row["query"], row
        assert isinstance(row["valid"], bool) and isinstance(row["errors"], list)
        if row["messages"] is not None:
            assistant = row["messages"][1]
            assert assistant["role"] == "assistant"
            assert all(call["function"]["name"] == "get_weather" for call in assistant["tool_calls"])
    # The schema held the answer: the call names what exists.
    assert made[0]["valid"], made[0]["errors"]
