"""The real-server test infrastructure itself: the fixture starts llama-server and it answers."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from llama_server_fixture import LlamaServer  # scripts/ is on sys.path (the repo's conftest.py)

pytestmark = pytest.mark.llama_server


def _get(url: str) -> tuple[int, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, json.loads(response.read())


def _post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.status, json.loads(response.read())


def test_health(llama_server: LlamaServer) -> None:
    assert llama_server.base_url.startswith("http://127.0.0.1:")
    assert llama_server.openai_base_url == llama_server.base_url + "/v1"
    assert _get(llama_server.base_url + "/health") == (200, {"status": "ok"})


def test_chat_completion(llama_server: LlamaServer) -> None:
    status, body = _post(
        llama_server.openai_base_url + "/chat/completions",
        {"messages": [{"role": "user", "content": "What's the capital of Spain?"}], "max_tokens": 20},
    )
    assert status == 200
    assert len(body["choices"]) == 1
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert isinstance(message["content"], str)
    assert message["content"].strip()
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    assert 0 < usage["completion_tokens"] <= 20
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
