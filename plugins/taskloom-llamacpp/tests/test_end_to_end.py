"""The real model behind core's default-LLM paths, and structured output that always parses.

The full generate-then-judge run of a new user is ``tests/test_quickstart.py`` (it runs the demo).
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field
from taskloom_llamacpp import LlamaCppLLM

from taskloom import get_task
from taskloom.cli import main as taskloom_cli


class Rating(BaseModel):
    rating: int = Field(ge=1, le=5)
    rationale: str = Field(max_length=160)


@pytest.mark.parametrize("schema_as", ["model", "dict"])
def test_structured_output_always_parses(schema_as: str) -> None:
    schema: Any = Rating if schema_as == "model" else Rating.model_json_schema()
    llm = LlamaCppLLM()
    chats = [[{"role": "user", "content": f"Rate the number {n} from 1 to 5 and say why."}] for n in range(4)]
    try:
        outputs = llm.generate(chats, num_generations=2, structured_output=schema, max_new_tokens=768, temperature=1.0)
    finally:
        llm.unload()
    for output in outputs:
        for text in output["generations"]:
            Rating.model_validate_json(text)


def test_cli_generate_names_no_llm(capsys: pytest.CaptureFixture[str]) -> None:
    question = "What's the capital city of Spain? Answer in one sentence."
    code = taskloom_cli(["generate", question, "--temperature", "0", "--max-new-tokens", "24"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Madrid" in captured.out
    assert "SmolLM2-135M-Instruct.Q4_1" in captured.err


def test_environment_picks_a_gguf_file(monkeypatch: pytest.MonkeyPatch) -> None:
    from taskloom_llamacpp import bundled_model_path

    monkeypatch.setenv("TASKLOOM_DEFAULT_LLM", f"llamacpp:{bundled_model_path()}")
    task = get_task("text-generation")
    assert isinstance(task.llm, LlamaCppLLM)
    assert task.llm.model_path == str(bundled_model_path())
