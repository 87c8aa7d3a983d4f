"""Fixtures: the real llama.cpp server (from the repo's scripts/) and a scripted loopback HTTP server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai_scripted_http import FakeBatchAPI, ScriptedServer

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "llama_server: tests against a real llama.cpp server")


@pytest.fixture
def fake() -> Iterator[FakeBatchAPI]:
    """The loopback fake of OpenAI's Files and Batch endpoints."""
    api = FakeBatchAPI()
    api.thread.start()
    try:
        yield api
    finally:
        api.httpd.shutdown()
        api.httpd.server_close()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    with ScriptedServer() as server:
        yield server
