"""evol-quality, genstruct, clair and urial: prompts built, replies parsed (good and bad), rounds, examples.

Every task runs through a scripted LLM, so what each call was sent can be checked exactly; the
documented ``example`` of each must come out of its example row, both as JSON (an LLM with
structured output) and in the layout its prompt asks for otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from taskloom_tasks.clair import CLAIR
from taskloom_tasks.evol_quality import QUALITY_OPERATIONS, EvolQuality
from taskloom_tasks.genstruct import Genstruct
from taskloom_tasks.schema_check import check_object
from taskloom_tasks.urial import TURN_MARKERS, URIAL

import taskloom
from taskloom import Pipeline
from taskloom.plugin import GenerationOptions
from taskloom.tasks.base import METADATA, Task
from taskloom.testing import ScriptedAsyncLLM, ScriptedLLM
from taskloom.testing.conformance import TaskConformance
from taskloom.typing import ChatType, Row

# -- helpers -------------------------------------------------------------------------------------


class StructuredLLM(ScriptedLLM):
    """A scripted LLM that takes ``structured_output``, as one with a JSON mode does."""

    class Options(GenerationOptions):
        pass


def make(name: str, replies: str | list[Any] | None = None, *, llm: Any = None, **fields: Any) -> Task:
    if llm is None:
        llm = ScriptedLLM(replies=[replies] if isinstance(replies, str) else replies)
    task = taskloom.get_task(name, llm=llm, **fields)
    task.load()
    return task


def run(task: Task, rows: list[Row]) -> list[Row]:
    return [row for batch in task.process([dict(r) for r in rows]) for row in batch]


def run_one(task: Task, row: Row) -> Row:
    [out] = run(task, [row])
    return out


def columns(task: Task, row: Row) -> dict[str, Any]:
    return {column: row[column] for column in task.output_columns()}


def raw_output(task: Task, row: Row) -> Any:
    return row[METADATA][f"raw_output_{task.name}"]


def sent(llm: ScriptedLLM, index: int = 0) -> str:
    """The text of a call's input: the raw prompt, or the last chat message."""
    chat = llm.calls[index]["input"]
    return chat if isinstance(chat, str) else str(chat[-1]["content"])


# -- one spec per task ----------------------------------------------------------------------------


@dataclass
class Spec:
    cls: type[Task]
    rows: list[Row]
    json_reply: str | list[str]
    layout_reply: str | list[str]
    malformed: str
    several_calls: bool = False


SPECS: dict[str, Spec] = {
    "evol-quality": Spec(
        EvolQuality,
        rows=[
            {"instruction": "How do I keep a basil plant alive indoors?", "response": "Water it."},
            {"instruction": "What is 2+2?", "response": "4"},
        ],
        json_reply=[
            '{"response": "Water it only when the top of the soil is dry: soggy soil rots its roots."}',
            json.dumps({"response": EvolQuality.example[1]["evolved_response"]}),  # type: ignore[index]
        ],
        layout_reply=[
            "Water it only when the top of the soil is dry: soggy soil rots its roots.",
            "Improved answer: " + EvolQuality.example[1]["evolved_response"],  # type: ignore[index]
        ],
        malformed="   ",
        several_calls=True,
    ),
    "genstruct": Spec(
        Genstruct,
        rows=[
            {"title": "Sourdough starter", "content": "Flour, water, wild yeast and bacteria."},
            {"title": "Tides", "content": "The Moon's gravity pulls the oceans into two bulges."},
        ],
        json_reply=json.dumps(Genstruct.example[1]),  # type: ignore[index]
        layout_reply="User: {user}\nAssistant: {assistant}".format(**Genstruct.example[1]),  # type: ignore[index]
        malformed="Sourdough is a kind of bread.",
    ),
    "clair": Spec(
        CLAIR,
        rows=[
            {"task": "What is the boiling point of water at sea level?", "student_solution": "It boils at 90 °C."},
            {"task": "Name a prime number.", "student_solution": "9"},
        ],
        json_reply=json.dumps({"rational": CLAIR.example[1]["rational"], "revision": CLAIR.example[1]["revision"]}),  # type: ignore[index]
        layout_reply="Reasoning: {rational}\nRevised answer:\n{revision}".format(**CLAIR.example[1]),  # type: ignore[index]
        malformed="The answer is wrong, it should be 100 °C.",
    ),
    "urial": Spec(
        URIAL,
        rows=[
            {"instruction": "Name a planet with rings."},
            {
                "conversation": [
                    {"role": "user", "content": "Hi!"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "Name a colour."},
                ]
            },
        ],
        json_reply=URIAL.example[1]["generation"],  # type: ignore[index]
        layout_reply=URIAL.example[1]["generation"] + "\n### User:\nAnd another one?",  # type: ignore[index]
        malformed="\n### User:\nWhat else?",
    ),
}
NAMES = list(SPECS)


def _replies(reply: str | list[str]) -> list[str]:
    return [reply] if isinstance(reply, str) else reply


def test_the_four_are_registered_by_name() -> None:
    for name, spec in SPECS.items():
        assert taskloom.list_tasks()[name] is spec.cls
        assert type(taskloom.get_task(name, llm=ScriptedLLM())) is spec.cls


# -- conformance ---------------------------------------------------------------------------------


def _conformance(name: str, **fields: Any) -> type[TaskConformance]:
    spec = SPECS[name]

    class Conformance(TaskConformance):
        rows = spec.rows
        replies = [*_replies(spec.json_reply), *_replies(spec.layout_reply)]
        malformed_reply = spec.malformed

        @pytest.fixture
        def task(self) -> Task:
            return taskloom.get_task(name, llm=ScriptedLLM(), **fields)

        if spec.several_calls:
            # Every round's reply is kept as JSON, so the raw output holds the reply, labelled.
            def test_unparsable_reply_keeps_raw_output(self, task: Task) -> None:
                scripted = self._scripted(task, [self.malformed_reply], add_raw_output=False)
                for row in self._run(scripted, self.rows):
                    assert all(row[c] is None for c in scripted.output_columns())
                    kept = json.loads(raw_output(scripted, row))
                    assert [r["reply"] for r in kept] == [self.malformed_reply]

    return Conformance


class TestEvolQualityConformance(_conformance("evol-quality")):
    pass


class TestEvolQualityStoredConformance(_conformance("evol-quality", store_evolutions=True)):
    pass


class TestGenstructConformance(_conformance("genstruct")):
    pass


class TestCLAIRConformance(_conformance("clair")):
    pass


class TestURIALConformance(_conformance("urial")):
    pass


# -- documented examples -------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["json", "layout"])
@pytest.mark.parametrize("name", NAMES)
def test_documented_example_holds(name: str, style: str) -> None:
    spec = SPECS[name]
    assert spec.cls.example is not None
    given, expected = spec.cls.example
    if style == "json" and name != "urial":  # urial has no schema: a base model writes prose
        llm: ScriptedLLM = StructuredLLM(replies=_replies(spec.json_reply))
    else:
        llm = ScriptedLLM(replies=_replies(spec.layout_reply))
    task = make(name, llm=llm)
    row = run_one(task, given)
    assert set(expected) == set(task.output_columns()), "the example shows every output column"
    assert columns(task, row) == expected
    assert {k: row[k] for k in given} == given
    assert raw_output(task, row) is not None


@pytest.mark.parametrize("name", ["evol-quality", "genstruct", "clair"])
def test_structured_output_sends_the_schema_and_the_example_json_fits_it(name: str) -> None:
    spec = SPECS[name]
    llm = StructuredLLM(replies=_replies(spec.json_reply))
    task = make(name, llm=llm)
    schema = task.response_schema()  # type: ignore[attr-defined]
    for reply in _replies(spec.json_reply):
        check_object(json.loads(reply), schema)
    assert spec.cls.example is not None
    run_one(task, spec.cls.example[0])
    assert llm.calls
    for index, call in enumerate(llm.calls):
        assert call["kwargs"]["structured_output"] == schema
        assert "JSON" in sent(llm, index)


@pytest.mark.parametrize("name", ["evol-quality", "genstruct", "clair"])
def test_without_structured_output_the_prompt_asks_for_its_layout(name: str) -> None:
    spec = SPECS[name]
    llm = StructuredLLM(replies=_replies(spec.layout_reply))
    task = make(name, llm=llm, structured_output=False)
    assert spec.cls.example is not None
    given, expected = spec.cls.example
    assert columns(task, run_one(task, given)) == expected
    assert all("structured_output" not in call["kwargs"] for call in llm.calls)
    assert "JSON" not in sent(llm)


# -- evol-quality --------------------------------------------------------------------------------

BASIL = {"instruction": "How do I keep a basil plant alive indoors?", "response": "Water it."}


def _response_in(chat: ChatType) -> str:
    text = chat if isinstance(chat, str) else str(chat[-1]["content"])
    return text.split("## Current answer\n", 1)[1].split("\n\n", 1)[0]


def _improve(chat: ChatType, index: int) -> str:
    """Appends a round marker to the answer it was shown."""
    return _response_in(chat) + " +"


def test_evol_quality_rounds_build_on_each_other_and_keep_the_instruction() -> None:
    llm = ScriptedLLM(reply=_improve)
    task = make("evol-quality", llm=llm, num_evolutions=3, store_evolutions=True)
    out = run_one(task, BASIL)
    assert out["evolved_responses"] == ["Water it. +", "Water it. + +", "Water it. + + +"]
    assert [_response_in(call["input"]) for call in llm.calls] == ["Water it.", "Water it. +", "Water it. + +"]
    for index in range(3):
        assert "## Request\nHow do I keep a basil plant alive indoors?\n" in sent(llm, index)
    kept = json.loads(raw_output(task, out))
    assert [r["reply"] for r in kept] == out["evolved_responses"]
    assert [r["operation"] for r in kept] == out["mutations"]
    assert out[METADATA][f"raw_input_{task.name}"] == llm.calls[0]["input"]
    assert out["instruction"] == BASIL["instruction"] and out["response"] == BASIL["response"]


def test_evol_quality_writes_the_last_round_only_by_default() -> None:
    task = make("evol-quality", llm=ScriptedLLM(reply=_improve), num_evolutions=2)
    out = run_one(task, BASIL)
    assert columns(task, out) == {"evolved_response": "Water it. + +", "mutations": out["mutations"]}
    assert "evolved_responses" not in out


def test_evol_quality_can_lead_with_the_original_response() -> None:
    task = make(
        "evol-quality",
        llm=ScriptedLLM(reply=_improve),
        num_evolutions=2,
        store_evolutions=True,
        include_original_response=True,
    )
    out = run_one(task, BASIL)
    assert out["evolved_responses"] == ["Water it.", "Water it. +", "Water it. + +"]
    assert len(out["mutations"]) == 2


def test_evol_quality_mutations_are_drawn_per_round_and_shown_to_the_model() -> None:
    llm = ScriptedLLM(reply=_improve)
    task = make("evol-quality", llm=llm, num_evolutions=5)
    out = run_one(task, BASIL)
    expected = [task.operation_for(BASIL["instruction"], BASIL["response"], 0, r) for r in range(5)]  # type: ignore[attr-defined]
    assert out["mutations"] == expected
    assert set(out["mutations"]) <= set(QUALITY_OPERATIONS)
    for index, operation in enumerate(out["mutations"]):
        assert QUALITY_OPERATIONS[operation] in sent(llm, index)


@pytest.mark.parametrize("seed", [0, 3])
def test_evol_quality_choices_depend_on_the_seed_and_the_row_only(seed: int) -> None:
    rows = [{"instruction": f"Question {i}?", "response": f"Answer {i}."} for i in range(6)]

    def mutations(seed: int, reply: Any) -> list[Any]:
        task = make("evol-quality", llm=ScriptedLLM(reply=reply), seed=seed, num_evolutions=3, num_generations=2)
        return [r["mutations"] for r in run(task, rows)]

    first = mutations(seed, _improve)
    assert first == mutations(seed, lambda chat, index: "Something else entirely.")  # not the replies
    assert first != mutations(seed + 100, _improve), "the seed should matter"


def test_evol_quality_generations_are_separate_chains() -> None:
    llm = ScriptedLLM(reply=_improve)
    task = make("evol-quality", llm=llm, num_evolutions=2, num_generations=3, group_generations=True)
    out = run_one(task, BASIL)
    assert out["evolved_response"] == ["Water it. + +"] * 3
    assert out["mutations"] == [
        [task.operation_for(BASIL["instruction"], BASIL["response"], g, r) for r in range(2)]  # type: ignore[attr-defined]
        for g in range(3)
    ]
    assert len(llm.calls) == 6 and all(call["num_generations"] == 1 for call in llm.calls)


def test_evol_quality_operations_can_be_restricted() -> None:
    task = make("evol-quality", llm=ScriptedLLM(reply=_improve), operations=["detail"], num_evolutions=3)
    assert run_one(task, BASIL)["mutations"] == ["detail"] * 3
    with pytest.raises(ValueError):
        taskloom.get_task("evol-quality", llm=ScriptedLLM(), operations=["wit"])


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Improved answer: Water it weekly.", "Water it weekly."),
        ("**Revised response:**\nWater it weekly.", "Water it weekly."),
        ("#Rewritten Response#:\nWater it weekly.", "Water it weekly."),
        ('{"response": "Water it weekly."}', "Water it weekly."),
        ("```python\nprint('hi')\n```", "```python\nprint('hi')\n```"),  # an answer keeps its code fences
        ('{"pot": "clay", "light": "south"}', '{"pot": "clay", "light": "south"}'),  # JSON the user asked for
        ("Improved answers need care. Water it weekly.", "Improved answers need care. Water it weekly."),
    ],
)
def test_evol_quality_reads_a_round_reply(reply: str, expected: str) -> None:
    task = make("evol-quality", [reply], num_evolutions=1)
    assert run_one(task, BASIL)["evolved_response"] == expected


@pytest.mark.parametrize("failed", ["", "   ", None, '{"response": "Water it only when'])
def test_evol_quality_a_round_without_an_answer_fails_the_row_and_keeps_the_rounds(failed: str | None) -> None:
    llm = ScriptedLLM(replies=["Water it weekly.", failed, "never asked"])
    task = make("evol-quality", llm=llm, num_evolutions=3)
    out = run_one(task, BASIL)
    assert columns(task, out) == dict.fromkeys(task.output_columns())
    assert len(llm.calls) == 2, "no round after a failed one"
    assert [r["reply"] for r in json.loads(raw_output(task, out))] == ["Water it weekly.", failed]


def test_evol_quality_in_a_pipeline_and_a_rerun_asks_nothing_again(tmp_path: Path) -> None:
    rows = [BASIL, {"instruction": "What is 2+2?", "response": "4"}]

    def evol(llm: ScriptedAsyncLLM) -> Task:
        return taskloom.get_task("evol-quality", name="evol", llm=llm, num_evolutions=2, num_generations=2)

    first = ScriptedAsyncLLM(reply=_improve)
    result = Pipeline(evol(first), source=rows, name="p").run(output=tmp_path / "run", progress=None)
    out = list(result.rows())
    assert len(first.calls) == len(rows) * 2 * 2
    assert [r["evolved_response"] for r in out] == ["Water it. + +"] * 2 + ["4 + +"] * 2

    again = ScriptedAsyncLLM(reply=_improve)
    rerun = Pipeline(evol(again), source=rows, name="p").run(output=tmp_path / "run", progress=None)
    assert again.calls == []
    assert list(rerun.rows()) == out


def test_evol_quality_template_override_sees_the_round_variables() -> None:
    llm = ScriptedLLM(reply=lambda chat, index: "Better.")
    task = make("evol-quality", llm=llm, num_evolutions=2, template="{{ operation }}|{{ instruction }}|{{ response }}")
    out = run_one(task, BASIL)
    assert sent(llm, 0) == f"{out['mutations'][0]}|{BASIL['instruction']}|Water it."
    assert sent(llm, 1) == f"{out['mutations'][1]}|{BASIL['instruction']}|Better."


# -- genstruct -----------------------------------------------------------------------------------

DOC = {"title": "Tides", "content": "The Moon's gravity pulls the oceans into two bulges."}


def test_genstruct_prompt_shows_the_document() -> None:
    llm = ScriptedLLM(replies=["User: Why are there two tides a day?\nAssistant: Two bulges."])
    run_one(make("genstruct", llm=llm), DOC)
    prompt = sent(llm)
    assert "## Title\nTides\n" in prompt
    assert "## Document\nThe Moon's gravity pulls the oceans into two bulges.\n" in prompt
    assert "User: <the instruction>" in prompt


@pytest.mark.parametrize(
    "reply",
    [
        "User: Why are there two tides a day?\nAssistant: Because the Moon pulls the oceans into two bulges.",
        "[[[User]]] Why are there two tides a day?\n[[[Assistant]]] Because the Moon pulls the oceans into two bulges.",
        "## User\nWhy are there two tides a day?\n\n## Assistant\nBecause the Moon pulls the oceans into two bulges.",
        "**Question:** Why are there two tides a day?\n**Answer:** Because the Moon pulls the oceans into two bulges.",
        "User: Why are there two tides a day?\nAssistant: Because the Moon pulls the oceans into two bulges.\n"
        "User: And why do they shift each day?\nAssistant: The Moon moves.",
        '```json\n{"user": "Why are there two tides a day?", "assistant": "Because the Moon pulls the oceans into '
        'two bulges."}\n```',
    ],
)
def test_genstruct_reads_the_exchange(reply: str) -> None:
    task = make("genstruct", [reply])
    assert columns(task, run_one(task, DOC)) == {
        "user": "Why are there two tides a day?",
        "assistant": "Because the Moon pulls the oceans into two bulges.",
    }


def test_genstruct_keeps_a_multi_line_answer_whole() -> None:
    reply = "User: List the steps.\nAssistant: 1. Mix.\n2. Wait: a day.\nNote: keep it warm."
    out = run_one(make("genstruct", [reply]), DOC)
    assert out["assistant"] == "1. Mix.\n2. Wait: a day.\nNote: keep it warm."


@pytest.mark.parametrize(
    "reply",
    [
        "Why are there two tides a day?",  # no layout
        "User: Why are there two tides a day?",  # no answer
        "Assistant: Two bulges.\nUser: Why?",  # no answer after the instruction
        "User:\nAssistant: Two bulges.",  # empty instruction
        '{"user": "Why are there two tides a day?"}',
    ],
)
def test_genstruct_unreadable_reply_keeps_the_raw_output(reply: str) -> None:
    task = make("genstruct", [reply])
    out = run_one(task, DOC)
    assert columns(task, out) == {"user": None, "assistant": None}
    assert raw_output(task, out) == reply


# -- clair ---------------------------------------------------------------------------------------

WATER = {"task": "What is the boiling point of water at sea level?", "student_solution": "It boils at 90 °C."}


def test_clair_prompt_shows_the_task_and_the_answer() -> None:
    llm = ScriptedLLM(replies=["Reasoning: Wrong number.\nRevised answer:\nIt boils at 100 °C."])
    out = run_one(make("clair", llm=llm), WATER)
    prompt = sent(llm)
    assert "## Task\nWhat is the boiling point of water at sea level?\n" in prompt
    assert "## Student's answer\nIt boils at 90 °C.\n" in prompt
    assert out["student_solution"] == "It boils at 90 °C."  # the rejected side of the pair stays in the row


@pytest.mark.parametrize(
    ("reply", "revision", "rational"),
    [
        ("Reasoning: Wrong number.\nRevised answer:\nIt boils at 100 °C.", "It boils at 100 °C.", "Wrong number."),
        ("**Reasoning:** Wrong number.\n\n**Revised answer:**\nIt boils at 100 °C.", "It boils at 100 °C.",
         "Wrong number."),
        ("## Reasoning\nWrong number.\n\n## Revised answer\nIt boils at 100 °C.", "It boils at 100 °C.",
         "## Reasoning\nWrong number."),
        ("Wrong number.\nRevision: It boils at 100 °C.", "It boils at 100 °C.", "Wrong number."),
        ("Reasoning: Fix the value.\nCorrected student solution:\nStep 1: heat.\nResult: 100 °C.",
         "Step 1: heat.\nResult: 100 °C.", "Fix the value."),
        ("Revised answer:\n```python\nprint(100)\n```", "```python\nprint(100)\n```", None),
        ('{"rationale": "Wrong number.", "revision": "It boils at 100 °C."}', "It boils at 100 °C.",
         "Wrong number."),
    ],
)  # fmt: skip
def test_clair_reads_the_revision_and_the_reasoning(reply: str, revision: str, rational: str | None) -> None:
    task = make("clair", [reply])
    assert columns(task, run_one(task, WATER)) == {"revision": revision, "rational": rational}


@pytest.mark.parametrize(
    "reply",
    [
        "It should be 100 °C.",
        "Reasoning: Wrong number.\nRevised answer:\n   ",
        '{"rational": "Wrong number."}',
    ],
)
def test_clair_unreadable_reply_keeps_the_raw_output(reply: str) -> None:
    task = make("clair", [reply])
    out = run_one(task, WATER)
    assert columns(task, out) == {"revision": None, "rational": None}
    assert raw_output(task, out) == reply


# -- urial ---------------------------------------------------------------------------------------


def test_urial_sends_raw_text_ending_in_an_open_assistant_turn() -> None:
    llm = ScriptedLLM(replies=["Saturn."])
    out = run_one(make("urial", llm=llm), {"instruction": "Name a planet with rings."})
    prompt = llm.calls[0]["input"]
    assert isinstance(prompt, str)
    assert prompt.startswith("What follows is a record of conversations between a user and an AI assistant.")
    assert prompt.endswith("### User:\nName a planet with rings.\n\n### Assistant:\n")
    assert prompt.count("### User:") == 4  # three example exchanges of ours, then the row's
    assert out["generation"] == "Saturn."
    assert out[METADATA]["raw_input_urial"] == prompt


def test_urial_renders_a_conversation_and_its_system_message() -> None:
    llm = ScriptedLLM(replies=["Green."])
    conversation = [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]},
    ]
    run_one(make("urial", llm=llm), {"conversation": conversation})
    prompt = sent(llm)
    assert prompt.endswith("### User:\nHi!\n\n### Assistant:\nHello!\n\n### User:\nName a colour.\n\n### Assistant:\n")
    assert "the assistant also follows these instructions: Answer in one word." in prompt
    assert "### Assistant:\nAnswer in one word." not in prompt


def test_urial_system_prompt_joins_the_preamble() -> None:
    llm = ScriptedLLM(replies=["Saturn."])
    run_one(make("urial", llm=llm, system_prompt="Be brief."), {"instruction": "Name a planet with rings."})
    assert "the assistant also follows these instructions: Be brief." in sent(llm)


def test_urial_sends_its_stop_sequences_with_the_llms_own() -> None:
    llm = ScriptedLLM(replies=["Saturn."], generation_kwargs={"stop": ["</s>"], "max_new_tokens": 16})
    run_one(make("urial", llm=llm), {"instruction": "Name a planet with rings."})
    assert llm.calls[0]["kwargs"]["stop"] == ["</s>", *TURN_MARKERS]
    assert llm.calls[0]["kwargs"]["max_new_tokens"] == 16


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Saturn.\n\n### User:\nAnd another?\n\n### Assistant:\nJupiter.", "Saturn."),
        ("  Saturn has rings.\n### Assistant:\nSo does Uranus.", "Saturn has rings."),
        ("Saturn.\n\n### Usher: not a turn", "Saturn.\n\n### Usher: not a turn"),
    ],
)
def test_urial_cuts_the_answer_at_the_next_turn(reply: str, expected: str) -> None:
    task = make("urial", [reply])
    assert run_one(task, {"instruction": "Name a planet with rings."})["generation"] == expected
    assert raw_output(task, run_one(task, {"instruction": "x"})) == reply


@pytest.mark.parametrize("reply", ["", "   ", "### User:\nWhat else?", "\n\n### Assistant:\nHm."])
def test_urial_a_reply_with_no_answer_is_unreadable(reply: str) -> None:
    task = make("urial", [reply])
    out = run_one(task, {"instruction": "Name a planet with rings."})
    assert out["generation"] is None
    assert raw_output(task, out) == reply


def test_urial_stop_follows_a_template_of_your_own() -> None:
    template = "{% for m in messages %}{{ m.role }}> {{ m.content }}\n{% endfor %}assistant>"
    llm = ScriptedLLM(replies=[" Saturn.\nuser> more"])
    task = make("urial", llm=llm, template=template, stop=["\nuser>"])
    out = run_one(task, {"instruction": "Name a planet with rings."})
    assert llm.calls[0]["input"] == "user> Name a planet with rings.\nassistant>\n"
    assert llm.calls[0]["kwargs"]["stop"] == ["\nuser>"]
    assert out["generation"] == "Saturn."


def test_urial_refuses_an_llm_that_only_takes_chats() -> None:
    with pytest.raises(ValueError, match="raw text") as caught:
        taskloom.get_task("urial", llm=ScriptedLLM(raw_text=False, model="chat-only"))
    assert "urial" in str(caught.value) and "chat-only" in str(caught.value)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"conversation": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}, "end with"),
        ({"conversation": "Hi"}, "list of messages"),
        ({"conversation": [{"role": "robot", "content": "Hi"}]}, "list of messages"),
        ({"conversation": []}, "end with"),
        ({"other": "x"}, "'instruction' or a 'conversation'"),
    ],
)
def test_urial_refuses_a_row_it_cannot_prompt(row: Row, message: str) -> None:
    llm = ScriptedLLM()
    with pytest.raises(ValueError, match=message):
        run(make("urial", llm=llm), [row])
    assert llm.calls == []


def test_urial_instruction_wins_over_a_conversation() -> None:
    llm = ScriptedLLM(replies=["Saturn."])
    row = {"instruction": "Name a planet with rings.", "conversation": [{"role": "user", "content": "Other."}]}
    run_one(make("urial", llm=llm), row)
    assert "Other." not in sent(llm)
