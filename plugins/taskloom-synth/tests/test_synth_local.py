"""``magpie`` and ``conversation`` on the local default model (SmolLM2-135M in-process).

Its template is read from the GGUF file; the instructions come from raw text completion. What a
135M model writes is weak, so these check the shape of the rows and that every call is cached
(a rerun of the finished pipeline sends no request), not the quality of the text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from taskloom import Pipeline, get_llm, get_task

pytest.importorskip("taskloom_llamacpp", reason="runs on the local default model")


def local(**generation_kwargs: Any) -> Any:
    return get_llm("llamacpp", generation_kwargs={"temperature": 0.8, "max_new_tokens": 24, **generation_kwargs})


def test_magpie_from_nothing_with_the_models_own_template(tmp_path: Path) -> None:
    task = get_task("magpie", llm=local(), num_rows=3, n_turns=2, system_prompt="You help people cook.")
    first = Pipeline(task, name="magpie").run(output=tmp_path, progress=None)
    rows = list(first.rows())
    assert [row["seed"] for row in rows] == [0, 1, 2]
    for row in rows:
        conversation = row["conversation"]
        assert [m["role"] for m in conversation] == ["system", "user", "assistant", "user", "assistant"], row
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in conversation)
        assert "<|im_start|>" not in conversation[1]["content"]  # the markup ended the turn, not the text
    stats = first.stats.steps[task.name]
    assert stats.requests == 12 and stats.cached == 0
    # Different rows, different instructions (each row's requests carry a seed of their own).
    assert len({row["conversation"][1]["content"] for row in rows}) == 3
    again = Pipeline(task, name="magpie").run(output=tmp_path, progress=None)
    assert again.stats.steps[task.name].requests == 0
    assert list(again.rows()) == rows


def test_conversation_between_a_simulated_user_and_the_model(tmp_path: Path) -> None:
    task = get_task("conversation", llm=local(), n_turns=2)
    rows = [{"topic": "learning to juggle"}, {"instruction": "Name a fruit that is yellow."}]
    first = Pipeline(task, source=rows, name="talk").run(output=tmp_path, progress=None)
    made = list(first.rows())
    for row in made:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user", "assistant"], row
        assert all(m["content"].strip() for m in row["messages"])
    assert made[1]["messages"][0]["content"] == "Name a fruit that is yellow."
    assert first.stats.steps[task.name].requests == 4 + 3
    again = Pipeline(task, source=rows, name="talk").run(output=tmp_path, progress=None)
    assert again.stats.steps[task.name].requests == 0
    assert list(again.rows()) == made
