"""Fixtures for the taskloom-anthropic tests: the shared real llama-server, and a model id for it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "llama_server: needs the real llama-server (built once, cached)")
