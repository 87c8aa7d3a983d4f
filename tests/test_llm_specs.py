"""Every installed provider can be named by a short spec, as $TASKLOOM_DEFAULT_LLM and --llm do."""

from __future__ import annotations

import pytest

from taskloom import llm_from_spec


@pytest.mark.parametrize(
    ("spec", "field", "value"),
    [
        ("openai:gpt-4o-mini", "model", "gpt-4o-mini"),
        ("anthropic:claude-sonnet-4-5", "model", "claude-sonnet-4-5"),
        ("huggingface:meta-llama/Llama-3.1-8B-Instruct", "model", "meta-llama/Llama-3.1-8B-Instruct"),
        ("llamacpp:/models/any.gguf", "model_path", "/models/any.gguf"),
    ],
)
def test_spec_sets_the_provider_model_field(spec: str, field: str, value: str) -> None:
    llm = llm_from_spec(spec)
    assert llm.type_name() == spec.partition(":")[0]
    assert getattr(llm, field) == value
