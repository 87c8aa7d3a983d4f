"""The example tasks, run with taskloom's scripted LLM (needs the package installed)."""

from __future__ import annotations

import pytest
from taskloom_example_tasks import HaikuTask, SentimentTask
from taskloom_example_tasks.haiku import parse_haiku
from taskloom_example_tasks.sentiment import parse_sentiment

from taskloom import Task, get_llm, get_task, list_tasks
from taskloom.testing.conformance import TaskConformance

POEM = "an old silent pond\na frog jumps into the pond\nsplash, silence again"


def test_registered_through_the_entry_point() -> None:
    tasks = list_tasks()
    assert tasks["haiku"] is HaikuTask
    assert tasks["sentiment"] is SentimentTask


def test_haiku_rows_keep_inputs_and_parse_each_generation() -> None:
    llm = get_llm("scripted", replies=[f"\n{POEM}\n\n", "not a poem"])
    task = get_task("haiku", llm=llm)
    task.load()
    rows = next(task.process([{"topic": "ponds"}, {"topic": "rain"}]))
    assert [r["topic"] for r in rows] == ["ponds", "rain"]
    assert rows[0]["haiku"] == POEM
    assert rows[1]["haiku"] is None
    assert rows[1]["distilabel_metadata"]["raw_output_haiku"] == "not a poem"
    assert "ponds" in llm.calls[0]["input"][-1]["content"]


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("Positive.", "positive"),
        ("  NEGATIVE  ", "negative"),
        ('{"sentiment": "neutral"}', "neutral"),
        ("Sentiment: negative\nThe text is not positive at all.", "negative"),
        ("I would say the tone is clearly positive here.", "positive"),
    ],
)
def test_parse_sentiment(answer: str, label: str) -> None:
    assert parse_sentiment(answer) == label


@pytest.mark.parametrize("answer", ["no idea", "somewhere between positive and negative"])
def test_parse_sentiment_refuses_unclear_answers(answer: str) -> None:
    with pytest.raises(ValueError):
        parse_sentiment(answer)


def test_parse_haiku_rejects_wrong_line_count() -> None:
    with pytest.raises(ValueError, match="3 lines"):
        parse_haiku("one\ntwo")
    assert parse_haiku(f"```\n{POEM}\n```") == POEM


class TestHaikuConformance(TaskConformance):
    """The same checks core runs on its own tasks (taskloom.testing.conformance)."""

    rows = [{"topic": "ponds"}, {"topic": "rain"}]
    replies = [POEM]
    malformed_reply = "one line is not a haiku"

    @pytest.fixture
    def task(self) -> Task:
        return get_task("haiku", llm=get_llm("scripted"))


class TestSentimentConformance(TaskConformance):
    rows = [{"text": "I love it."}, {"text": "It broke on day one."}]
    replies = ["positive", "negative"]
    malformed_reply = "hard to say"

    @pytest.fixture
    def task(self) -> Task:
        return get_task("sentiment", llm=get_llm("scripted"))


def test_fixture_adds_a_task_for_one_test(taskloom_plugin) -> None:
    """The taskloom pytest fixtures reach third-party test suites through the pytest11 entry point."""
    import taskloom

    class HaikuCopy(HaikuTask):
        registry_name = "haiku-copy"

    class Extra:
        @taskloom.hookimpl
        def register_tasks(self, register) -> None:
            register(HaikuCopy)

    taskloom_plugin(Extra(), name="extra")
    assert type(get_task("haiku-copy", llm=get_llm("scripted"))) is HaikuCopy
