"""Fixtures: the shared real llama.cpp server, and a scripted loopback HTTP server for failures."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))

from huggingface_scripted_http import Reply, ScriptedServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "llama_server: tests against a real llama.cpp server")


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    with ScriptedServer([Reply()]) as server:  # a well-formed completion until a test scripts otherwise
        yield server
