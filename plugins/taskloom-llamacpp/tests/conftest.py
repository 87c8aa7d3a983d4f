"""Tests here run the real bundled model (SmolLM2-135M-Instruct) in-process: no server, no network."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from taskloom_llamacpp import LlamaCppLLM

QUICK = {"max_new_tokens": 24, "temperature": 0.0}
"""Short, deterministic answers keep the real-model tests to a few seconds."""


@pytest.fixture(autouse=True)
def _no_user_settings(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own default LLM and config file must not change what a test sees."""
    for variable in ("TASKLOOM_DEFAULT_LLM", "TASKLOOM_CONFIG"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))


@pytest.fixture
def llm() -> Iterator[LlamaCppLLM]:
    llm = LlamaCppLLM()
    llm.load()
    yield llm
    llm.unload()
