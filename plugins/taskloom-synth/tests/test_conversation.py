"""``conversation``: who sees what at each turn, one LLM or two, and resuming mid-conversation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from taskloom_synth.conversation import OPENING, user_text

from taskloom import Pipeline, get_task
from taskloom.errors import GenerationError
from taskloom.testing import ScriptedAsyncLLM, ScriptedLLM


def replies(chat: Any, index: int) -> str:
    """The simulated user (its chats start with its part) asks; the assistant answers."""
    if chat[0]["content"].startswith("You are playing a person"):
        return f"User: Question {sum(m['role'] == 'assistant' for m in chat) + 1}?"
    return f"Answer to {chat[-1]['content']}"


def test_the_user_sees_the_dialogue_with_roles_swapped_and_the_assistant_sees_it_plainly() -> None:
    llm = ScriptedLLM(reply=replies)
    task = get_task("conversation", llm=llm, n_turns=2, system_prompt="Be helpful.")
    task.load()
    [row] = next(task.process([{"topic": "tomatoes", "persona": "a retired teacher"}]))
    assert row["messages"] == [
        {"role": "system", "content": "Be helpful."},
        {"role": "user", "content": "Question 1?"},
        {"role": "assistant", "content": "Answer to Question 1?"},
        {"role": "user", "content": "Question 2?"},
        {"role": "assistant", "content": "Answer to Question 2?"},
    ]
    first_user, first_answer, second_user, _ = (call["input"] for call in llm.calls)
    assert "a retired teacher" in first_user[0]["content"] and "tomatoes" in first_user[0]["content"]
    assert first_user[1:] == [{"role": "user", "content": OPENING}]
    assert first_answer == [{"role": "system", "content": "Be helpful."}, {"role": "user", "content": "Question 1?"}]
    assert second_user[2:] == [
        {"role": "assistant", "content": "Question 1?"},
        {"role": "user", "content": "Answer to Question 1?"},
    ]


def test_an_instruction_opens_the_conversation_as_it_is() -> None:
    llm = ScriptedLLM(reply=replies)
    task = get_task("conversation", llm=llm, n_turns=1)
    task.load()
    [row] = next(task.process([{"instruction": "How do I boil an egg?"}]))
    assert row["messages"] == [
        {"role": "user", "content": "How do I boil an egg?"},
        {"role": "assistant", "content": "Answer to How do I boil an egg?"},
    ]
    assert len(llm.calls) == 1


def test_two_llms_each_speak_their_part_and_each_is_priced_by_its_model(tmp_path: Path) -> None:
    assistant = ScriptedAsyncLLM(model="helper-model", reply=replies)
    user = ScriptedAsyncLLM(model="user-model", reply=replies)
    task = get_task("conversation", llm=assistant, user_llm=user, n_turns=2)
    result = Pipeline(task, source=[{"topic": "chess"}], name="two").run(output=tmp_path, progress=None)
    [row] = result.rows()
    assert len(row["messages"]) == 4
    assert all(call["input"][0]["content"].startswith("You are playing") for call in user.calls)
    assert not any(call["input"][0]["content"].startswith("You are playing") for call in assistant.calls)
    assert len(user.calls) == len(assistant.calls) == 2
    assert row["model_name"] == "helper-model"
    assert "user_llm" in task.dump() and task.dump()["user_llm"]["model"] == "user-model"


def test_a_rerun_pays_only_for_the_turns_it_does_not_have(tmp_path: Path) -> None:
    """The second assistant turn fails (as a killed run's last request would be missing); the rerun
    finds the first three turns in the cache and asks only for the fourth."""
    calls = {"n": 0}

    def breaks_at_the_fourth(chat: Any, index: int) -> Any:
        calls["n"] += 1
        return GenerationError("the server went away") if calls["n"] == 4 else replies(chat, index)

    rows = [{"persona": "a nurse on night shifts"}]
    first = ScriptedAsyncLLM(reply=breaks_at_the_fourth)
    made = Pipeline(get_task("conversation", llm=first, n_turns=2), source=rows, name="c").run(
        output=tmp_path, progress=None
    )
    [broken] = made.rows()
    assert broken["messages"] is None and "went away" in broken["distilabel_metadata"]["error_conversation"]
    second = ScriptedAsyncLLM(reply=replies)
    again = Pipeline(get_task("conversation", llm=second, n_turns=2), source=rows, name="c").run(
        output=tmp_path, progress=None
    )
    [row] = again.rows()
    assert len(row["messages"]) == 4
    assert len(second.calls) == 1  # only the turn that was missing


def test_a_row_with_nothing_to_start_from_records_why_and_the_others_go_on() -> None:
    task = get_task("conversation", llm=ScriptedLLM(reply=replies), n_turns=1)
    task.load()
    empty, good = next(task.process([{"topic": "  "}, {"topic": "rain"}]))
    assert empty["messages"] is None
    assert "needs a topic, a persona or an instruction" in empty["distilabel_metadata"]["error_conversation"]
    assert len(good["messages"]) == 2


@pytest.mark.parametrize(
    ("reply", "text"),
    [("User: Hi there", "Hi there"), ('"Quoted?"', "Quoted?"), ("  plain  ", "plain"), ("", None), (None, None)],
)
def test_user_text(reply: str | None, text: str | None) -> None:
    assert user_text(reply) == text


def test_conversations_go_through_format_sft_as_they_are(tmp_path: Path) -> None:
    from taskloom import get_step

    talk = get_task("conversation", llm=ScriptedAsyncLLM(reply=replies), n_turns=2)
    sft = get_step("format-sft", messages_column="messages")
    result = Pipeline(talk >> sft, source=[{"topic": "rain"}, {"topic": " "}], name="sft").run(
        output=tmp_path, progress=None
    )
    [row] = result.rows()
    assert set(row) == {"messages"} and [m["role"] for m in row["messages"]] == ["user", "assistant"] * 2
    assert result.stats.steps["format-sft"].dropped == {"messages is None": 1}
