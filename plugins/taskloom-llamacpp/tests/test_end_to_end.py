"""The new user's path with the real model: no LLM named, five instructions answered, then judged."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, Field
from taskloom_llamacpp import LlamaCppLLM

from taskloom import Task, get_task
from taskloom.cli import main as taskloom_cli
from taskloom.config import default_llm_choice
from taskloom.tasks.base import METADATA
from taskloom.typing import ChatType, Row

INSTRUCTIONS = [
    "What's the capital city of Spain? Answer in one sentence.",
    "Give one tip for staying focused while studying.",
    "Name three primary colours.",
    "Write one sentence about the sea.",
    "What is 7 plus 5?",
]


class Rating(BaseModel):
    rating: int = Field(ge=1, le=5)
    rationale: str = Field(max_length=160)


class RateAnswer(Task):
    """A judge with structured output: the grammar makes every reply a valid Rating."""

    registry_name: ClassVar[str | None] = None

    @property
    def inputs(self) -> list[str]:
        return ["instruction", "generation"]

    @property
    def outputs(self) -> list[str]:
        return ["rating", "rationale", "model_name"]

    def format_input(self, input: Row) -> ChatType:
        return [
            {
                "role": "user",
                "content": (
                    "Rate how well the answer follows the instruction, from 1 (poor) to 5 (excellent). "
                    'Reply with JSON: {"rating": <1-5>, "rationale": "<one sentence>"}.\n\n'
                    f"Instruction: {input['instruction']}\nAnswer: {input['generation']}"
                ),
            }
        ]

    def format_output(self, output: str | None, input: Row | None = None) -> dict[str, Any]:
        parsed = Rating.model_validate_json(output or "")
        return {"rating": parsed.rating, "rationale": parsed.rationale}


def test_generate_then_judge_with_the_default_llm() -> None:
    assert default_llm_choice().spec == "llamacpp"
    writer = get_task("text-generation")  # names no LLM: the local default
    assert isinstance(writer.llm, LlamaCppLLM)
    writer.llm.set_runtime_parameters({"generation_kwargs": {"max_new_tokens": 48, "temperature": 0.7, "seed": 11}})
    judge = RateAnswer(
        name="rate",
        llm=LlamaCppLLM(generation_kwargs={"structured_output": Rating, "max_new_tokens": 256, "seed": 1}),
    )
    writer.load()
    judge.load()
    try:
        answered = next(writer.process([{"instruction": text} for text in INSTRUCTIONS]))
        judged = next(judge.process(answered))
    finally:
        writer.unload()
        judge.unload()

    assert [row["instruction"] for row in judged] == INSTRUCTIONS
    for row in answered:
        assert isinstance(row["generation"], str)
        assert row["generation"].strip()
        assert row["model_name"] == "SmolLM2-135M-Instruct.Q4_1"
    for row in judged:
        metadata = row[METADATA]
        assert "error_rate" not in metadata, metadata
        assert 1 <= row["rating"] <= 5, metadata["raw_output_rate"]
        assert row["rationale"].strip()
        json.loads(metadata["raw_output_rate"])
        assert metadata["statistics_rate"]["output_tokens"] > 0


@pytest.mark.parametrize("schema_as", ["model", "dict"])
def test_structured_output_always_parses(schema_as: str) -> None:
    schema: Any = Rating if schema_as == "model" else Rating.model_json_schema()
    llm = LlamaCppLLM()
    chats = [[{"role": "user", "content": f"Rate the number {n} from 1 to 5 and say why."}] for n in range(4)]
    try:
        outputs = llm.generate(chats, num_generations=2, structured_output=schema, max_new_tokens=256, temperature=1.0)
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
