"""Every task of the pack, run through ``process()`` (and pipelines) with scripted LLMs.

Each task has a :class:`Spec`: the fields it needs, conformance rows, replies that turn its
documented ``example`` input into its example output (as JSON and in the layout its prompt asks
for), a malformed reply, and a template override. The tests below are parametrized over them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field
from taskloom_tasks.backtranslation import InstructionBacktranslation
from taskloom_tasks.classification import TextClassification
from taskloom_tasks.evol_instruct import OPERATIONS, EvolInstruct
from taskloom_tasks.pairwise import PairwiseJudge
from taskloom_tasks.prometheus import PrometheusEval
from taskloom_tasks.rubric import RubricJudge
from taskloom_tasks.schema_check import check_object
from taskloom_tasks.scorers import ComplexityScorer, QualityScorer
from taskloom_tasks.self_instruct import SelfInstruct
from taskloom_tasks.ultrafeedback import UltraFeedback

import taskloom
from taskloom import Pipeline, get_task
from taskloom.plugin import GenerationOptions
from taskloom.tasks.base import METADATA, Task
from taskloom.testing import ScriptedAsyncLLM, ScriptedLLM
from taskloom.testing.conformance import TaskConformance
from taskloom.typing import ChatType, Row

# -- helpers -------------------------------------------------------------------------------------


class StructuredLLM(ScriptedLLM):
    """A scripted LLM whose ``generate`` takes ``structured_output``, as one with a JSON mode does."""

    class Options(GenerationOptions):
        pass  # the shared options, structured_output included (the plain scripted LLM has none)


def make(name: str, replies: str | list[Any] | None = None, *, llm: Any = None, **fields: Any) -> Task:
    """The task registered as ``name``, loaded, answering from ``replies`` (or ``llm``)."""
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


def prompt(llm: ScriptedLLM, index: int = 0) -> str:
    return str(llm.calls[index]["input"][-1]["content"])


# -- one spec per task ----------------------------------------------------------------------------


@dataclass
class Spec:
    cls: type[Task]
    fields: dict[str, Any]
    rows: list[Row]
    json_reply: str | list[str]
    """Turns ``example[0]`` into ``example[1]``; a list gives one reply per call."""
    layout_reply: str | list[str]
    """The same answer in the layout the prompt asks for when it does not ask for JSON."""
    malformed: str
    template: tuple[str, str]
    """A template override and the prompt it renders for ``example[0]``."""
    asks_json_always: bool = False
    has_schema: bool = True


SPECS: dict[str, Spec] = {
    "ultrafeedback": Spec(
        UltraFeedback,
        {},
        rows=[
            {"instruction": "What is 2+2?", "generations": ["4", "5"]},
            {"instruction": "Name a colour.", "generations": ["Blue.", "Seven."]},
        ],
        json_reply='{"assessments": [{"rationale": "Correct and direct.", "rating": 5}, '
        '{"rationale": "The sum is wrong.", "rating": 1}]}',
        layout_reply="Response 1\nRationale: Correct and direct.\nRating: 5\n\n"
        "Response 2\nRationale: The sum is wrong.\nRating: 1",
        malformed="Response 1\nRationale: Fine.\nRating: 9\n\nResponse 2\nRationale: Wrong.\nRating: 1",
        template=("{{ aspect }}: {{ instruction }} / {{ responses | join(' | ') }}", "overall: What is 2+2? / 4 | 5"),
    ),
    "prometheus-eval": Spec(
        PrometheusEval,
        {},
        rows=[
            {"instruction": "What is the capital of France?", "generation": "Paris."},
            {"instruction": "What is 3*3?", "generation": "6"},
        ],
        json_reply='{"feedback": "Correct and concise.", "result": 5}',
        layout_reply="Feedback: Correct and concise. [RESULT] 5",
        malformed="Feedback: Very good. [RESULT] 6",
        template=("{{ instruction }} -> {{ response }}", "What is the capital of France? -> Paris."),
    ),
    "pairwise-judge": Spec(
        PairwiseJudge,
        {},
        rows=[
            {"instruction": "What is 2+2?", "generations": ["4", "5"]},
            {"instruction": "Capital of Italy?", "generations": ["Milan", "Rome"]},
        ],
        json_reply='{"rationale": "A is correct; B is not.", "verdict": "A"}',
        layout_reply="A is correct; B is not.\nVerdict: A",
        malformed="Both answers have their merits.",
        template=("{{ instruction }}: A={{ response_a }} B={{ response_b }}", "What is 2+2?: A=4 B=5"),
    ),
    "quality-scorer": Spec(
        QualityScorer,
        {},
        rows=[
            {"instruction": "Name a prime number.", "responses": ["7", "9 is prime."]},
            {"instruction": "Name an even number.", "responses": ["4", "3"]},
        ],
        json_reply='{"scores": [5, 1]}',
        layout_reply="Response 1: 5\nResponse 2: 1",
        malformed="Response 1: 5",
        template=("{{ low }}-{{ high }}: {{ responses | join(',') }}", "1-6: 7,9 is prime."),
    ),
    "complexity-scorer": Spec(
        ComplexityScorer,
        {},
        rows=[{"instructions": ["Say hi.", "Prove Fermat's last theorem."]}, {"instructions": ["Add 1+1.", "Sort."]}],
        json_reply='{"scores": [1, 6]}',
        layout_reply="Instruction 1: 1\nInstruction 2: 6",
        malformed="Instruction 1: 1\nInstruction 2: 9",
        template=("{{ instructions | length }} on {{ low }}-{{ high }}", "2 on 1-6"),
    ),
    "rubric-judge": Spec(
        RubricJudge,
        {"criteria": "Be helpful and polite."},
        rows=[
            {"instruction": "Reply to a customer asking for a refund.", "generation": "No."},
            {"instruction": "Greet a guest.", "generation": "Welcome! Make yourself at home."},
        ],
        json_reply='{"rationale": "Curt and unhelpful.", "score": 1}',
        # Its prompt always asks for JSON; the usual wrapping of it:
        layout_reply='My evaluation:\n```json\n{"rationale": "Curt and unhelpful.", "score": 1}\n```',
        malformed="Score: 1. Curt and unhelpful.",
        template=("{{ criteria }} | {{ generation }}", "Be helpful and polite. | No."),
        asks_json_always=True,
    ),
    "self-instruct": Spec(
        SelfInstruct,
        {},
        rows=[{"topic": "home composting"}, {"topic": "bicycle repair"}],
        json_reply='{"instructions": ["Explain why my compost smells and how to fix it.", '
        '"Plan a compost bin for a small balcony."]}',
        layout_reply="1. Explain why my compost smells and how to fix it.\n2. Plan a compost bin for a small balcony.",
        malformed="Here are some instructions:",
        template=("{{ count }} about {{ topic }}", "5 about home composting"),
    ),
    "evol-instruct": Spec(
        EvolInstruct,
        {},
        rows=[{"instruction": "Write a poem."}, {"instruction": "Add 2 and 3."}],
        json_reply=[
            '{"instruction": "Write a poem about the sea in exactly four stanzas."}',
            '{"instruction": "Write a poem about the sea in exactly four stanzas, then explain step by step how '
            'each stanza builds on the one before."}',
        ],
        layout_reply=[
            "Write a poem about the sea in exactly four stanzas.",
            "Write a poem about the sea in exactly four stanzas, then explain step by step how each stanza builds "
            "on the one before.",
        ],
        malformed="   ",
        template=("{{ operation }}: {{ instruction }}", "add-constraints: Write a poem."),
    ),
    "instruction-backtranslation": Spec(
        InstructionBacktranslation,
        {},
        rows=[
            {"instruction": "How do I boil an egg?", "generation": "Simmer it for 9 minutes."},
            {"instruction": "Capital of Spain?", "generation": "Check out my blog!"},
        ],
        json_reply='{"reason": "Direct, complete and focused.", "score": 5}',
        layout_reply="Direct, complete and focused.\nScore: 5",
        malformed="A fine answer, I suppose.",
        template=(
            "{{ instruction }} => {{ generation }}",
            "How do I boil an egg? => Simmer it for 9 minutes, then cool it in cold water.",
        ),
    ),
    "text-classification": Spec(
        TextClassification,
        {"labels": ["positive", "negative", "neutral"]},
        rows=[{"text": "The battery died after a day."}, {"text": "Great screen!"}],
        json_reply='{"explanation": "It reports a defect.", "labels": ["negative"]}',
        layout_reply="It reports a defect.\nLabels: negative",
        malformed="It reports a defect.\nLabels: angry",
        template=("{{ text }} ({{ labels | length }} labels)", "The battery died after a day. (3 labels)"),
    ),
}
NAMES = list(SPECS)
SCHEMA_NAMES = [name for name, spec in SPECS.items() if spec.has_schema]


def test_every_task_of_the_pack_has_a_spec() -> None:
    from test_more_tasks import SPECS as MORE

    pack = {name: cls for name, cls in taskloom.list_tasks().items() if cls.__module__.startswith("taskloom_tasks.")}
    assert pack == {name: spec.cls for name, spec in [*SPECS.items(), *MORE.items()]}


@pytest.mark.parametrize("name", NAMES)
def test_get_task_by_name_builds_the_class(name: str) -> None:
    spec = SPECS[name]
    task = taskloom.get_task(name, llm=ScriptedLLM(), **spec.fields)
    assert type(task) is spec.cls
    assert spec.cls.example is not None


# -- conformance, once per task (and for the multi-call variants) ---------------------------------


def _conformance(name: str, **fields: Any) -> type[TaskConformance]:
    spec = SPECS[name]
    replies = [spec.json_reply, spec.layout_reply]
    flat: list[str | None] = [r for reply in replies for r in ([reply] if isinstance(reply, str) else reply)]

    class Conformance(TaskConformance):
        rows = spec.rows
        replies = flat
        malformed_reply = spec.malformed

        @pytest.fixture
        def task(self) -> Task:
            return taskloom.get_task(name, llm=ScriptedLLM(), **{**spec.fields, **fields})

    return Conformance


class _RepliesKeptAsJSON:
    """A multi-call task keeps every reply of a row as JSON, so its raw output is not the reply itself.

    (The core suite compares the raw output to the reply; here the reply is checked inside it.)
    """

    def test_unparsable_reply_keeps_raw_output(self, task: Task) -> None:
        scripted = self._scripted(task, [self.malformed_reply], add_raw_output=False)  # type: ignore[attr-defined]
        for row in self._run(scripted, self.rows):  # type: ignore[attr-defined]
            assert all(row[c] is None for c in scripted.output_columns())
            kept = json.loads(raw_output(scripted, row))
            replies = list(kept.values()) if isinstance(kept, dict) else [r["reply"] for r in kept]
            assert replies and all(r == self.malformed_reply for r in replies)  # type: ignore[attr-defined]


class TestUltraFeedbackConformance(_conformance("ultrafeedback")):
    pass


class TestUltraFeedbackHonestyConformance(_conformance("ultrafeedback", aspect="honesty")):
    pass


class TestPrometheusAbsoluteConformance(_conformance("prometheus-eval")):
    pass


class TestPrometheusRelativeConformance(_conformance("prometheus-eval", mode="relative", reference=True)):
    rows = [
        {"instruction": "Capital of Italy?", "generations": ["Milan", "Rome"], "reference": "Rome"},
        {"instruction": "2+2?", "generations": ["4", "5"], "reference": "4"},
    ]
    replies = ["Feedback: B names the capital. [RESULT] B", '{"feedback": "A is right.", "result": "A"}']
    malformed_reply = "Feedback: Both are equally good. [RESULT] tie"


class TestPairwiseJudgeConformance(_conformance("pairwise-judge")):
    pass


class TestPairwiseJudgeBothOrdersConformance(_RepliesKeptAsJSON, _conformance("pairwise-judge", both_orders=True)):
    pass


class TestQualityScorerConformance(_conformance("quality-scorer")):
    pass


class TestComplexityScorerConformance(_conformance("complexity-scorer")):
    pass


class TestRubricJudgeConformance(_conformance("rubric-judge")):
    pass


class TestSelfInstructConformance(_conformance("self-instruct")):
    pass


class TestSelfInstructSeedsConformance(_conformance("self-instruct", source="seeds")):
    rows = [{"seed_instructions": ["Write a haiku.", "Sum 2 and 2."]}, {"seed_instructions": ["Plan a trip."]}]


class TestEvolInstructConformance(_RepliesKeptAsJSON, _conformance("evol-instruct")):
    pass


class TestInstructionBacktranslationConformance(_conformance("instruction-backtranslation")):
    pass


class TestTextClassificationConformance(_conformance("text-classification")):
    pass


class TestTextClassificationMultiLabelConformance(_conformance("text-classification", multi_label=True)):
    pass


# -- documented examples ---------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["json", "layout"])
@pytest.mark.parametrize("name", NAMES)
def test_documented_example_holds(name: str, style: str) -> None:
    spec = SPECS[name]
    assert spec.cls.example is not None
    given, expected = spec.cls.example
    task = make(name, spec.json_reply if style == "json" else spec.layout_reply, **spec.fields)
    row = run_one(task, given)
    assert set(expected) == set(task.output_columns()), "the example shows every output column"
    assert columns(task, row) == expected
    assert {k: row[k] for k in given} == given
    assert raw_output(task, row) is not None


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_the_example_json_answer_fits_the_schema_the_task_sends(name: str) -> None:
    """The parser and the schema agree on the answer's keys, so a held-to-schema answer parses."""
    spec = SPECS[name]
    task = taskloom.get_task(name, llm=ScriptedLLM(), **spec.fields)
    schema = task.response_schema()  # type: ignore[attr-defined]
    assert schema is not None
    for reply in [spec.json_reply] if isinstance(spec.json_reply, str) else spec.json_reply:
        check_object(json.loads(reply), schema)


# -- messy replies that parse, malformed ones that do not ---------------------------------------------

UF_ROW = {"instruction": "What is 2+2?", "generations": ["4", "5"]}
PROM_ROW = {"instruction": "What is the capital of France?", "generation": "Paris."}
PAIR_ROW = {"instruction": "What is 2+2?", "generations": ["4", "5"]}
QUALITY_ROW = {"instruction": "Name a prime number.", "responses": ["7", "9 is prime."]}
COMPLEX_ROW = {"instructions": ["Say hi.", "Prove Fermat's last theorem."]}
BT_ROW = {"instruction": "How do I boil an egg?", "generation": "Simmer it for 9 minutes."}
TEXT_ROW = {"text": "The battery died after a day."}
LABELS = {"labels": ["positive", "negative", "neutral"]}
RUBRIC = {"criteria": "Be helpful."}
RUBRIC_ROW = {"instruction": "Reply to a refund request.", "generation": "No."}
UF_JSON = '{"assessments": [{"rationale": "Right.", "rating": 4}, {"rationale": "Wrong.", "rating": 2}]}'
UF_OUT = {"ratings": [4, 2], "rationales": ["Right.", "Wrong."]}

MESSY = [
    # ultrafeedback
    pytest.param("ultrafeedback", {}, UF_ROW, f"Here is my assessment:\n{UF_JSON}\nLet me know!", UF_OUT, id="uf-prose-around-json"),  # noqa: E501
    pytest.param("ultrafeedback", {}, UF_ROW, f"```json\n{UF_JSON}\n```", UF_OUT, id="uf-fenced-json"),
    pytest.param(
        "ultrafeedback", {}, UF_ROW,
        '{"assessments": [{"rationale": "Right.", "rating": "4/5"}, {"rationale": "Wrong.", "rating": "two"}]}',
        UF_OUT, id="uf-json-ratings-as-text",
    ),
    pytest.param(
        "ultrafeedback", {}, UF_ROW, "Response 1: Rating: 4/5\nResponse 2: Rating: 2/5",
        {"ratings": [4, 2], "rationales": [None, None]}, id="uf-rating-over-five",
    ),
    pytest.param(
        "ultrafeedback", {}, UF_ROW,
        "Response 1\nRationale: Right.\nRating: four\n\nResponse 2\nRationale: Wrong.\nRating: two",
        UF_OUT, id="uf-numbers-as-words",
    ),
    pytest.param(
        "ultrafeedback", {}, UF_ROW,
        "**Response 1**\n**Rationale:** Right.\n**Rating:** 4\n\n**Response 2**\n**Rationale:** Wrong.\n**Rating:** 2",
        UF_OUT, id="uf-bold-markdown",
    ),
    pytest.param(
        "ultrafeedback", {}, UF_ROW, "Rating: 4\nRating: 2", {"ratings": [4, 2], "rationales": [None, None]},
        id="uf-bare-ratings",
    ),
    pytest.param("ultrafeedback", {}, UF_ROW, "[4, 2.0]", {"ratings": [4, 2], "rationales": [None, None]}, id="uf-json-list"),  # noqa: E501
    # prometheus-eval
    pytest.param("prometheus-eval", {}, PROM_ROW, "**Feedback:** Correct. [RESULT]: 4", {"feedback": "Correct.", "result": 4}, id="prom-bold-colon"),  # noqa: E501
    pytest.param("prometheus-eval", {}, PROM_ROW, "Feedback: Correct.\n\n[RESULT] (4)", {"feedback": "Correct.", "result": 4}, id="prom-parenthesised"),  # noqa: E501
    pytest.param(
        "prometheus-eval", {}, PROM_ROW, "Feedback: Brief, one detail missing. [RESULT] 4 out of 5",
        {"feedback": "Brief, one detail missing.", "result": 4}, id="prom-out-of-five",
    ),
    pytest.param(
        "prometheus-eval", {}, PROM_ROW, "Feedback: Score 2 would be harsh; it is right. [RESULT] four",
        {"feedback": "Score 2 would be harsh; it is right.", "result": 4}, id="prom-word-after-other-number",
    ),
    pytest.param(
        "prometheus-eval", {}, PROM_ROW, 'Sure.\n```json\n{"feedback": "Correct.", "score": "4"}\n```',
        {"feedback": "Correct.", "result": 4}, id="prom-fenced-json-score-alias",
    ),
    pytest.param(
        "prometheus-eval", {"mode": "relative"}, PAIR_ROW, "Feedback: A is right. [RESULT] Response A",
        {"feedback": "A is right.", "result": "A"}, id="prom-relative-response-a",
    ),
    # pairwise-judge
    pytest.param(
        "pairwise-judge", {}, PAIR_ROW, 'Sure.\n```json\n{"rationale": "B is wrong.", "verdict": "A"}\n```',
        {"verdict": "A", "rationale": "B is wrong.", "orders_agree": None}, id="pair-fenced-json",
    ),
    pytest.param(
        "pairwise-judge", {}, PAIR_ROW, '{"rationale": "B is right.", "verdict": "Response B"}',
        {"verdict": "B", "rationale": "B is right.", "orders_agree": None}, id="pair-json-response-b",
    ),
    pytest.param(
        "pairwise-judge", {}, PAIR_ROW, "A adds correctly.\n\n**Final verdict:** [[A]]",
        {"verdict": "A", "rationale": "A adds correctly.", "orders_agree": None}, id="pair-final-verdict",
    ),
    pytest.param(
        "pairwise-judge", {}, PAIR_ROW, "Both are fine.\nVerdict: tie",
        {"verdict": "tie", "rationale": "Both are fine.", "orders_agree": None}, id="pair-tie",
    ),
    pytest.param(
        "pairwise-judge", {}, PAIR_ROW, "Response B is better: it shows its working.",
        {"verdict": "B", "rationale": "Response B is better: it shows its working.", "orders_agree": None},
        id="pair-sentence",
    ),
    # scorers
    pytest.param("quality-scorer", {}, QUALITY_ROW, "Response 1: 5/6\nResponse 2: 1/6", {"scores": [5, 1]}, id="quality-fractions"),  # noqa: E501
    pytest.param("quality-scorer", {}, QUALITY_ROW, "Response 1: five\nResponse 2: one", {"scores": [5, 1]}, id="quality-words"),  # noqa: E501
    pytest.param("quality-scorer", {}, QUALITY_ROW, "Here are the scores:\n5\n1", {"scores": [5, 1]}, id="quality-lines"),  # noqa: E501
    pytest.param(
        "quality-scorer", {}, QUALITY_ROW, 'Scores:\n```json\n{"scores": ["5", 1.0]}\n```', {"scores": [5, 1]},
        id="quality-fenced-json",
    ),
    pytest.param(
        "quality-scorer", {"low": 0, "high": 10}, QUALITY_ROW, "Response 1: 10\nResponse 2: 0", {"scores": [10, 0]},
        id="quality-own-scale",
    ),
    pytest.param(
        "complexity-scorer", {}, COMPLEX_ROW, "**Instruction 1:** 1\n**Instruction 2:** 6", {"scores": [1, 6]},
        id="complexity-bold",
    ),
    # instruction-backtranslation
    pytest.param(
        "instruction-backtranslation", {}, BT_ROW, "Reasoning: Direct and complete.\n**Score:** 5 out of 5",
        {"score": 5, "reason": "Direct and complete."}, id="bt-reasoning-bold-score",
    ),
    pytest.param(
        "instruction-backtranslation", {}, BT_ROW, "Direct, but terse.\n\nScore: four",
        {"score": 4, "reason": "Direct, but terse."}, id="bt-score-word",
    ),
    pytest.param(
        "instruction-backtranslation", {}, BT_ROW, 'Answer: {"rationale": "Good.", "rating": 4.0}',
        {"score": 4, "reason": "Good."}, id="bt-json-aliases",
    ),
    # text-classification
    pytest.param("text-classification", LABELS, TEXT_ROW, 'A defect.\nLabel: "Negative".', {"labels": "negative", "explanation": "A defect."}, id="cls-quoted-label"),  # noqa: E501
    pytest.param("text-classification", LABELS, TEXT_ROW, '{"explanation": "A defect.", "label": "NEGATIVE"}', {"labels": "negative", "explanation": "A defect."}, id="cls-json-label-alias"),  # noqa: E501
    pytest.param("text-classification", LABELS, TEXT_ROW, "The buyer is unhappy.\n**Category:** negative", {"labels": "negative", "explanation": "The buyer is unhappy."}, id="cls-bold-category"),  # noqa: E501
    pytest.param("text-classification", LABELS, TEXT_ROW, "A defect.\nLabel: negative, since it complains", {"labels": "negative", "explanation": "A defect."}, id="cls-label-then-prose"),  # noqa: E501
    pytest.param("text-classification", LABELS, TEXT_ROW, "Explanation: A defect.\nLabels: negative", {"labels": "negative", "explanation": "A defect."}, id="cls-explanation-label"),  # noqa: E501
    pytest.param("text-classification", LABELS, TEXT_ROW, "negative", {"labels": "negative", "explanation": None}, id="cls-bare-label"),  # noqa: E501
    # self-instruct
    pytest.param(
        "self-instruct", {"num_instructions": 2}, {"topic": "tea"},
        'Here are 2 instructions:\n1. "Compare green and black tea."\n2) Explain how to brew oolong.',
        {"instructions": ["Compare green and black tea.", "Explain how to brew oolong."]}, id="self-lead-in-quotes",
    ),
    pytest.param(
        "self-instruct", {"num_instructions": 2}, {"topic": "tea"},
        "- Compare green and black tea.\n- Compare green and black tea.\n- Explain how to brew oolong.\n- Extra one.",
        {"instructions": ["Compare green and black tea.", "Explain how to brew oolong."]}, id="self-dups-and-cap",
    ),
    pytest.param(
        "self-instruct", {"num_instructions": 2}, {"topic": "json"},
        '1. Convert {"a": 1} to YAML.\n2. Explain what JSON is for.',
        {"instructions": ['Convert {"a": 1} to YAML.', "Explain what JSON is for."]}, id="self-json-inside-prose",
    ),
    pytest.param(
        "self-instruct", {"num_instructions": 2}, {"topic": "tea"},
        '```json\n{"instructions": ["Compare green and black tea.", "Explain how to brew oolong."]}\n```',
        {"instructions": ["Compare green and black tea.", "Explain how to brew oolong."]}, id="self-fenced-json",
    ),
    # rubric-judge
    pytest.param(
        "rubric-judge", RUBRIC, RUBRIC_ROW, 'Here you go: {"rationale": "Curt.", "score": "2"} Thanks.',
        {"rationale": "Curt.", "score": 2}, id="rubric-json-in-prose",
    ),
    # evol-instruct: one reply per round
    pytest.param(
        "evol-instruct", {"num_evolutions": 1}, {"instruction": "Write a poem"},
        "```\nRewritten Instruction: Write a sonnet about rain.\n```",
        {"evolved_instruction": "Write a sonnet about rain.", "evolved_instructions": ["Write a sonnet about rain."]},
        id="evol-fenced-lead-in",
    ),
    pytest.param(
        "evol-instruct", {"num_evolutions": 1}, {"instruction": "Write a poem"}, '"Write a sonnet about rain."',
        {"evolved_instruction": "Write a sonnet about rain.", "evolved_instructions": ["Write a sonnet about rain."]},
        id="evol-quoted",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("name", "fields", "row", "reply", "expected"), MESSY)
def test_messy_replies_parse(name: str, fields: dict[str, Any], row: Row, reply: str, expected: dict[str, Any]) -> None:
    task = make(name, reply, **fields)
    out = run_one(task, row)
    assert {k: out[k] for k in expected} == expected
    assert raw_output(task, out) is not None


MALFORMED = [
    pytest.param("ultrafeedback", {}, UF_ROW, "Response 1\nRationale: Right.\nRating: 4", id="uf-one-rating-for-two"),
    pytest.param("ultrafeedback", {}, UF_ROW, "Rating: 4\nRating: 2\nRating: 3", id="uf-three-ratings-for-two"),
    pytest.param("ultrafeedback", {}, UF_ROW, '{"assessments": [{"rationale": "Right.", "rating": 4}]}', id="uf-json-one-for-two"),  # noqa: E501
    pytest.param("ultrafeedback", {}, UF_ROW, "Response 1\nRating: 4\n\nResponse 2\nRating: 6", id="uf-out-of-range"),
    pytest.param("ultrafeedback", {}, UF_ROW, "Response 1\nRating: 4\n\nResponse 2\nRating: 0/5", id="uf-zero"),
    pytest.param("ultrafeedback", {}, UF_ROW, '{"assessments": [{"rating": 4}, {"rating": 4.5}]}', id="uf-json-fraction"),  # noqa: E501
    pytest.param("ultrafeedback", {}, UF_ROW, "", id="uf-empty"),
    pytest.param("prometheus-eval", {}, PROM_ROW, "Feedback: Very good. [RESULT] 6", id="prom-out-of-range"),
    pytest.param("prometheus-eval", {}, PROM_ROW, "Feedback: A solid answer.", id="prom-no-result"),
    pytest.param("prometheus-eval", {}, PROM_ROW, '{"feedback": "Correct."}', id="prom-json-no-result"),
    # A JSON answer out of range is wrong; it is not read again as prose ("Score: 4" in the feedback).
    pytest.param("prometheus-eval", {}, PROM_ROW, '{"feedback": "Score: 4 would be generous.", "result": 9}', id="prom-json-out-of-range"),  # noqa: E501
    pytest.param("prometheus-eval", {}, PROM_ROW, 'My grade: {"feedback": "Score: 4 would be generous.", "result": 9}', id="prom-embedded-json-out-of-range"),  # noqa: E501
    pytest.param("prometheus-eval", {"mode": "relative"}, PAIR_ROW, "Feedback: Equal. [RESULT] tie", id="prom-relative-tie"),  # noqa: E501
    pytest.param("prometheus-eval", {"mode": "relative"}, PAIR_ROW, '{"feedback": "Response A is better.", "result": "C"}', id="prom-relative-json-c"),  # noqa: E501
    pytest.param("pairwise-judge", {}, PAIR_ROW, "Both answers have their merits.", id="pair-no-verdict"),
    pytest.param("pairwise-judge", {}, PAIR_ROW, '{"rationale": "Response A is better.", "verdict": "D"}', id="pair-json-bad-verdict"),  # noqa: E501
    pytest.param("pairwise-judge", {"allow_tie": False}, PAIR_ROW, "They are equal.\nVerdict: tie", id="pair-tie-not-allowed"),  # noqa: E501
    pytest.param("pairwise-judge", {}, PAIR_ROW, "", id="pair-empty"),
    pytest.param("quality-scorer", {}, QUALITY_ROW, "Response 1: 5", id="quality-too-few"),
    pytest.param("quality-scorer", {}, QUALITY_ROW, "Response 1: 0\nResponse 2: 3", id="quality-below-range"),
    pytest.param("quality-scorer", {}, QUALITY_ROW, '{"scores": [5, 7]}', id="quality-json-above-range"),
    pytest.param("quality-scorer", {}, QUALITY_ROW, '{"scores": [5, 1, 2]}', id="quality-json-too-many"),
    pytest.param("quality-scorer", {}, QUALITY_ROW, "Both are fine.", id="quality-no-scores"),
    pytest.param("complexity-scorer", {}, COMPLEX_ROW, "Instruction 1: 7\nInstruction 2: 1", id="complexity-above-range"),  # noqa: E501
    pytest.param("rubric-judge", RUBRIC, RUBRIC_ROW, '{"rationale": "Curt.", "score": 6}', id="rubric-above-range"),
    pytest.param("rubric-judge", RUBRIC, RUBRIC_ROW, '{"rationale": "Curt."}', id="rubric-missing-key"),
    pytest.param("rubric-judge", RUBRIC, RUBRIC_ROW, '{"rationale": "Curt.", "score": "low"}', id="rubric-wrong-type"),
    pytest.param("rubric-judge", RUBRIC, RUBRIC_ROW, "Score: 1. Curt.", id="rubric-no-json"),
    pytest.param("self-instruct", {}, {"topic": "tea"}, "", id="self-empty"),
    pytest.param("self-instruct", {}, {"topic": "tea"}, "Here are some instructions:", id="self-lead-in-only"),
    # Before, the JSON text itself became the one "instruction".
    pytest.param("self-instruct", {}, {"topic": "tea"}, '{"instructions": []}', id="self-json-empty-list"),
    pytest.param("self-instruct", {}, {"topic": "tea"}, '{"instructions": ["Brew a pot of tea.", 5]}', id="self-json-not-strings"),  # noqa: E501
    pytest.param("instruction-backtranslation", {}, BT_ROW, "Score: 7", id="bt-above-range"),
    pytest.param("instruction-backtranslation", {}, BT_ROW, "A fine answer, I suppose.", id="bt-no-score"),
    pytest.param("instruction-backtranslation", {}, BT_ROW, '{"reason": "I would say Score: 4.", "score": 9}', id="bt-json-out-of-range"),  # noqa: E501
    pytest.param("text-classification", LABELS, TEXT_ROW, "A defect.\nLabels: angry", id="cls-unknown-label"),
    pytest.param("text-classification", LABELS, TEXT_ROW, '{"explanation": "Not negative at all.", "labels": ["angry"]}', id="cls-json-unknown-label"),  # noqa: E501
    pytest.param("text-classification", LABELS, TEXT_ROW, "Mixed.\nLabels: negative, positive", id="cls-two-labels"),
    pytest.param("text-classification", LABELS, TEXT_ROW, '{"explanation": "x", "labels": []}', id="cls-json-none"),
    pytest.param("text-classification", LABELS, TEXT_ROW, "", id="cls-empty"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "fields", "row", "reply"), MALFORMED)
def test_malformed_replies_give_none_and_keep_the_raw_output(
    name: str, fields: dict[str, Any], row: Row, reply: str
) -> None:
    task = make(name, reply, add_raw_output=False, **fields)
    out = run_one(task, row)
    assert columns(task, out) == dict.fromkeys(task.output_columns())
    assert raw_output(task, out) == reply


# -- published judge formats -------------------------------------------------------------------------

PUBLISHED = [
    pytest.param(
        "prometheus-eval", {}, PROM_ROW,
        "Feedback: The response names Paris, which is correct, and wastes no words. [RESULT] 4",
        {"feedback": "The response names Paris, which is correct, and wastes no words.", "result": 4},
        id="prometheus-absolute",
    ),
    pytest.param(
        "prometheus-eval", {"mode": "relative"}, PAIR_ROW,
        "Feedback: Response B gets the sum wrong, while Response A is right. [RESULT] A",
        {"feedback": "Response B gets the sum wrong, while Response A is right.", "result": "A"},
        id="prometheus-relative-a",
    ),
    pytest.param(
        "prometheus-eval", {"mode": "relative"}, PAIR_ROW,
        "Feedback: Response A misreads the question; Response B answers it. [RESULT] B",
        {"feedback": "Response A misreads the question; Response B answers it.", "result": "B"},
        id="prometheus-relative-b",
    ),
    pytest.param(
        "ultrafeedback", {}, UF_ROW,
        "#### Output for Text 1\nRating: 4\nRationale: Right.\n\n#### Output for Text 2\nRating: 2\nRationale: Wrong.",
        UF_OUT, id="ultrafeedback-output-for-text",
    ),
    pytest.param(
        "ultrafeedback", {"aspect": "truthfulness"}, UF_ROW,
        "#### Output for Text 1\nType: None\nRationale: No hallucination.\nRating: 4\nRationale: Right.\n\n"
        "#### Output for Text 2\nType: 1\nRationale: Contradicts arithmetic.\nRating: 2\nRationale: Wrong.",
        {"ratings": [4, 2]}, id="ultrafeedback-truthfulness-type",
    ),
    pytest.param("pairwise-judge", {}, PAIR_ROW, "Assistant A is correct.\n\n[[A]]", {"verdict": "A", "rationale": "Assistant A is correct."}, id="mt-bench-a"),  # noqa: E501
    pytest.param("pairwise-judge", {}, PAIR_ROW, "Assistant B explains more.\n\n[[B]]", {"verdict": "B", "rationale": "Assistant B explains more."}, id="mt-bench-b"),  # noqa: E501
    pytest.param("pairwise-judge", {}, PAIR_ROW, "Both are equally good.\n\n[[C]]", {"verdict": "tie", "rationale": "Both are equally good."}, id="mt-bench-c"),  # noqa: E501
    pytest.param("pairwise-judge", {}, PAIR_ROW, "[[B]]", {"verdict": "B"}, id="mt-bench-bare"),
    pytest.param("quality-scorer", {}, QUALITY_ROW, "[Response 1] Score: 4\n[Response 2] Score: 2", {"scores": [4, 2]}, id="deita-quality"),  # noqa: E501
    pytest.param("quality-scorer", {}, QUALITY_ROW, "[1] Score: 4\n[2] Score: 2", {"scores": [4, 2]}, id="deita-quality-numbers"),  # noqa: E501
    pytest.param("complexity-scorer", {}, COMPLEX_ROW, "[Instruction 1] Score: 1\n[Instruction 2] Score: 5", {"scores": [1, 5]}, id="deita-complexity"),  # noqa: E501
    pytest.param("complexity-scorer", {}, COMPLEX_ROW, "[1] Score: 1\n[2] Score: 5", {"scores": [1, 5]}, id="deita-complexity-numbers"),  # noqa: E501
    pytest.param("complexity-scorer", {}, COMPLEX_ROW, "[Response 1] Score: 2\n[Response 2] Score: 6", {"scores": [2, 6]}, id="deita-complexity-response"),  # noqa: E501
    pytest.param(
        "evol-instruct", {"num_evolutions": 1}, {"instruction": "Write a poem"},
        "#Rewritten Prompt#:\nWrite a sonnet about rain.", {"evolved_instruction": "Write a sonnet about rain."},
        id="wizardlm-rewritten-prompt",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("name", "fields", "row", "reply", "expected"), PUBLISHED)
def test_published_judge_formats_parse(
    name: str, fields: dict[str, Any], row: Row, reply: str, expected: dict[str, Any]
) -> None:
    task = make(name, reply, **fields)
    out = run_one(task, row)
    assert {k: out[k] for k in expected} == expected


# -- structured output ----------------------------------------------------------------------------


def _example_replies(name: str) -> list[str]:
    reply = SPECS[name].json_reply
    return [reply] if isinstance(reply, str) else reply


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_structured_output_sends_the_schema_and_asks_for_json(name: str) -> None:
    spec = SPECS[name]
    assert spec.cls.example is not None
    given, expected = spec.cls.example
    llm = StructuredLLM(replies=_example_replies(name))
    task = make(name, llm=llm, **spec.fields)
    assert task.uses_json()  # type: ignore[attr-defined]
    # A list to rate is held to the row's length; otherwise the task's one schema is sent.
    schema = task.row_schema(given) or task.response_schema()  # type: ignore[attr-defined]
    assert isinstance(schema, dict) and schema["type"] == "object"
    out = run_one(task, given)
    assert columns(task, out) == expected
    assert llm.calls, "no call was made"
    for index, call in enumerate(llm.calls):  # every call of a multi-call plan too
        assert call["kwargs"]["structured_output"] == schema
        assert "JSON" in prompt(llm, index)


def test_evol_instruct_refuses_a_cut_off_json_rewrite() -> None:
    """A JSON answer cut off by max_new_tokens is no instruction, not an instruction that starts with '{'."""
    task = make("evol-instruct", ['{"instruction": "Write a poem about', "unused"], num_evolutions=1)
    out = run_one(task, {"instruction": "Write a poem."})
    assert out["evolved_instruction"] is None
    assert '{\\"instruction\\": \\"Write a poem about' in out["distilabel_metadata"]["raw_output_evol-instruct"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("how", ["plain-llm", "structured_output=False"])
def test_without_structured_output_no_schema_is_sent(name: str, how: str) -> None:
    spec = SPECS[name]
    assert spec.cls.example is not None
    given, expected = spec.cls.example
    replies = [spec.layout_reply] if isinstance(spec.layout_reply, str) else spec.layout_reply
    if how == "plain-llm":
        llm: ScriptedLLM = ScriptedLLM(replies=replies)
        task = make(name, llm=llm, **spec.fields)
    else:
        llm = StructuredLLM(replies=replies)
        task = make(name, llm=llm, structured_output=False, **spec.fields)
    assert not task.uses_json()  # type: ignore[attr-defined]
    out = run_one(task, given)
    assert columns(task, out) == expected  # and the layout the prompt asks for then parses
    assert llm.calls
    for index, call in enumerate(llm.calls):
        assert "structured_output" not in call["kwargs"]
        assert ("JSON" in prompt(llm, index)) is spec.asks_json_always


@pytest.mark.parametrize(
    ("name", "row", "key", "count"),
    [
        ("ultrafeedback", {"instruction": "x", "generations": ["a", None, "b"]}, "assessments", 2),
        ("ultrafeedback", {"instruction": "x", "generations": ["a", "b", "c", "d"]}, "assessments", 4),
        ("quality-scorer", {"instruction": "x", "responses": ["a", "b", "c"]}, "scores", 3),
        ("complexity-scorer", {"instructions": ["a"]}, "scores", 1),
    ],
)
def test_structured_output_fixes_the_list_length_per_row(name: str, row: Row, key: str, count: int) -> None:
    """A small model's grammar then rates exactly the items shown, no more, no fewer."""
    reply = json.dumps({key: [{"rationale": "r", "rating": 3} if key == "assessments" else 3] * count})
    llm = StructuredLLM(replies=[reply])
    task = make(name, llm=llm)
    out = run_one(task, row)
    assert out[task.output_columns()[0]] is not None
    sent = llm.calls[0]["kwargs"]["structured_output"]
    assert (sent["properties"][key]["minItems"], sent["properties"][key]["maxItems"]) == (count, count)
    shared = task.response_schema()  # type: ignore[attr-defined]
    assert "minItems" not in shared["properties"][key], "the row's length must not leak into the shared schema"
    plain = ScriptedLLM(replies=[reply])
    run_one(make(name, llm=plain), row)
    assert "structured_output" not in plain.calls[0]["kwargs"]


@pytest.mark.parametrize(
    ("name", "row", "reply"),
    [
        ("quality-scorer", QUALITY_ROW, '{"scores": [5, 1]}'),
        ("ultrafeedback", UF_ROW, "[4, 2]"),
        ("pairwise-judge", PAIR_ROW, "A"),
    ],
)
def test_structured_output_keeps_a_schema_the_user_set_on_the_llm(name: str, row: Row, reply: str) -> None:
    own = {"type": "object", "properties": {"anything": {"type": "array"}}}
    llm = StructuredLLM(replies=[reply], generation_kwargs={"structured_output": own})
    run_one(make(name, llm=llm), row)
    assert llm.calls[0]["kwargs"]["structured_output"] == own


@pytest.mark.parametrize(
    ("name", "fields", "key", "expected"),
    [
        ("pairwise-judge", {}, "verdict", {"type": "string", "enum": ["A", "B", "tie"]}),
        ("pairwise-judge", {"allow_tie": False}, "verdict", {"type": "string", "enum": ["A", "B"]}),
        ("prometheus-eval", {}, "result", {"type": "integer", "minimum": 1, "maximum": 5}),
        ("prometheus-eval", {"mode": "relative"}, "result", {"type": "string", "enum": ["A", "B"]}),
        ("quality-scorer", {"low": 0, "high": 3}, "scores", {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 3}}),  # noqa: E501
        ("self-instruct", {"num_instructions": 3}, "instructions", {"type": "array", "items": {"type": "string", "minLength": 8, "maxLength": 400}, "minItems": 3, "maxItems": 3}),  # noqa: E501
        ("text-classification", {"labels": ["x", "y"]}, "labels", {"type": "array", "items": {"type": "string", "enum": ["x", "y"]}, "minItems": 1, "maxItems": 1}),  # noqa: E501
        ("text-classification", {"labels": ["x", "y"], "multi_label": True}, "labels", {"type": "array", "items": {"type": "string", "enum": ["x", "y"]}, "minItems": 1}),  # noqa: E501
    ],
)  # fmt: skip
def test_the_schema_follows_the_task_settings(name: str, fields: dict[str, Any], key: str, expected: Any) -> None:
    task = taskloom.get_task(name, llm=ScriptedLLM(), **fields)
    assert task.response_schema()["properties"][key] == expected  # type: ignore[attr-defined]


# -- templates ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_template_override_is_used(name: str) -> None:
    spec = SPECS[name]
    assert spec.cls.example is not None
    source, rendered = spec.template
    llm = ScriptedLLM(replies=_example_replies(name))
    task = make(name, llm=llm, template=source, **spec.fields)
    run_one(task, spec.cls.example[0])
    assert prompt(llm) == rendered
    assert task.format_input(spec.cls.example[0]) == [{"role": "user", "content": rendered}]


@pytest.mark.parametrize("name", NAMES)
def test_template_with_an_unknown_variable_fails_at_construction(name: str) -> None:
    spec = SPECS[name]
    with pytest.raises(ValueError, match=r"\['no_such_variable'\]") as caught:
        taskloom.get_task(name, llm=ScriptedLLM(), template="{{ json }} {{ no_such_variable }}", **spec.fields)
    assert spec.cls.__name__ in str(caught.value)


def test_system_prompt_comes_first() -> None:
    task = make("pairwise-judge", llm=ScriptedLLM(), system_prompt="You are strict.", template="{{ instruction }}")
    assert task.format_input(PAIR_ROW) == [
        {"role": "system", "content": "You are strict."},
        {"role": "user", "content": "What is 2+2?"},
    ]


# -- pairwise-judge in both orders ---------------------------------------------------------------------


def _shown(chat: ChatType) -> tuple[str, str]:
    """The responses a pairwise prompt shows as A and B."""
    content = chat[-1]["content"]
    a = content.split("## Response A\n")[1].split("\n\n")[0]
    b = content.split("## Response B\n")[1].split("\n\n")[0]
    return a, b


def _fair_judge(chat: ChatType, index: int) -> str:
    """Prefers the response "4" wherever it is shown."""
    a, b = _shown(chat)
    return f"{a} is right.\nVerdict: A" if a == "4" else f"{b} is right.\nVerdict: B"


@pytest.mark.parametrize(
    ("reply", "verdict", "agree"),
    [
        pytest.param(_fair_judge, "A", True, id="consistent-judge"),
        pytest.param(lambda chat, index: "Verdict: A", "tie", False, id="always-first"),
        pytest.param(lambda chat, index: "Verdict: B", "tie", False, id="always-second"),
        pytest.param(lambda chat, index: "Equal.\nVerdict: tie", "tie", True, id="both-ties"),
        pytest.param(
            lambda chat, index: "Verdict: tie" if _shown(chat)[0] == "4" else "Verdict: A",
            "tie",
            False,
            id="tie-then-verdict",
        ),
    ],
)
def test_both_orders_verdicts(reply: Any, verdict: str, agree: bool) -> None:
    llm = ScriptedLLM(reply=reply)
    task = make("pairwise-judge", llm=llm, both_orders=True)
    out = run_one(task, PAIR_ROW)
    assert (out["verdict"], out["orders_agree"]) == (verdict, agree)
    assert len(llm.calls) == 2
    assert _shown(llm.calls[0]["input"]) == ("4", "5")
    assert _shown(llm.calls[1]["input"]) == ("5", "4")  # the same pair, swapped
    assert json.loads(raw_output(task, out)) == {
        "a_b": reply(llm.calls[0]["input"], 0),
        "b_a": reply(llm.calls[1]["input"], 0),
    }


def test_both_orders_maps_b_back_and_keeps_the_first_orders_rationale() -> None:
    llm = ScriptedLLM(reply=lambda chat, index: "5 is right.\nVerdict: A" if _shown(chat)[0] == "5" else "Verdict: B")
    out = run_one(make("pairwise-judge", llm=llm, both_orders=True), PAIR_ROW)
    assert (out["verdict"], out["orders_agree"], out["rationale"]) == ("B", True, "Verdict: B")


def test_both_orders_two_calls_per_row_and_generation() -> None:
    llm = ScriptedLLM(reply=_fair_judge)
    task = make("pairwise-judge", llm=llm, both_orders=True, num_generations=2, group_generations=True)
    rows = run(task, [PAIR_ROW, {"instruction": "2+2?", "generations": ["5", "4"]}])
    assert [r["verdict"] for r in rows] == [["A", "A"], ["B", "B"]]
    assert [r["orders_agree"] for r in rows] == [[True, True], [True, True]]
    assert len(llm.calls) == 4  # two chats per row, each asked for both generations
    assert all(call["num_generations"] == 2 for call in llm.calls)


def test_both_orders_with_one_order_unanswered_fails_the_row_and_keeps_both() -> None:
    llm = ScriptedLLM(reply=lambda chat, index: "Verdict: A" if _shown(chat)[0] == "4" else None)
    task = make("pairwise-judge", llm=llm, both_orders=True)
    out = run_one(task, PAIR_ROW)
    assert columns(task, out) == {"verdict": None, "rationale": None, "orders_agree": None}
    assert json.loads(raw_output(task, out)) == {"a_b": "Verdict: A", "b_a": None}


def test_both_orders_with_an_unreadable_order_fails_the_row() -> None:
    llm = ScriptedLLM(reply=lambda chat, index: "Verdict: A" if _shown(chat)[0] == "4" else "Hmm.")
    task = make("pairwise-judge", llm=llm, both_orders=True)
    out = run_one(task, PAIR_ROW)
    assert out["verdict"] is None
    assert json.loads(raw_output(task, out)) == {"a_b": "Verdict: A", "b_a": "Hmm."}


def test_both_orders_sums_the_tokens_of_both_calls() -> None:
    llm = ScriptedLLM(reply=_fair_judge)
    task = make("pairwise-judge", llm=llm, both_orders=True)
    out = run_one(task, PAIR_ROW)
    words = [len(_fair_judge(call["input"], 0).split()) for call in llm.calls]
    assert out[METADATA][f"statistics_{task.name}"]["output_tokens"] == sum(words)


def test_both_orders_in_a_pipeline_and_a_rerun_asks_nothing_again(tmp_path: Path) -> None:
    rows = [
        PAIR_ROW,
        {"instruction": "2+2, again?", "generations": ["5", "4"]},
        {"instruction": "x", "generations": ["4", "4"]},
    ]
    first = ScriptedAsyncLLM(reply=_fair_judge)
    task = taskloom.get_task("pairwise-judge", name="judge", llm=first, both_orders=True)
    result = Pipeline(task, source=rows, name="p").run(output=tmp_path / "run", progress=None)
    out = list(result.rows())
    assert [(r["verdict"], r["orders_agree"]) for r in out] == [("A", True), ("B", True), ("tie", False)]
    assert len(first.calls) == 2 * len(rows)

    again = ScriptedAsyncLLM(reply=_fair_judge)
    task = taskloom.get_task("pairwise-judge", name="judge", llm=again, both_orders=True)
    rerun = Pipeline(task, source=rows, name="p").run(output=tmp_path / "run", progress=None)
    assert again.calls == []
    assert list(rerun.rows()) == out


def test_pairwise_needs_exactly_two_generations() -> None:
    task = make("pairwise-judge", llm=ScriptedLLM())
    with pytest.raises(ValueError, match="exactly 2 responses, got 3"):
        run(task, [{"instruction": "x", "generations": ["a", "b", "c"]}])
    with pytest.raises(ValueError, match="'generations' must be a list"):
        run(task, [{"instruction": "x", "generations": "a"}])


# -- evol-instruct -----------------------------------------------------------------------------------


def _instruction_in(chat: ChatType) -> str:
    return chat[-1]["content"].split("## Instruction\n")[1].split("\n\n")[0]


def _evolve(chat: ChatType, index: int) -> str:
    """Appends a round marker to the instruction it was shown."""
    return _instruction_in(chat) + " +"


def test_evol_rounds_build_on_each_other_in_order() -> None:
    llm = ScriptedLLM(reply=_evolve)
    task = make("evol-instruct", llm=llm, num_evolutions=3)
    out = run_one(task, {"instruction": "Write a poem"})
    assert out["evolved_instructions"] == ["Write a poem +", "Write a poem + +", "Write a poem + + +"]
    assert out["evolved_instruction"] == "Write a poem + + +"
    assert [_instruction_in(call["input"]) for call in llm.calls] == [
        "Write a poem",
        "Write a poem +",
        "Write a poem + +",
    ]
    kept = json.loads(raw_output(task, out))
    assert [r["reply"] for r in kept] == out["evolved_instructions"]
    assert [r["operation"] for r in kept] == out["mutations"]
    assert out[METADATA][f"raw_input_{task.name}"] == llm.calls[0]["input"]


def test_evol_mutations_are_drawn_per_round_and_shown_to_the_model() -> None:
    llm = ScriptedLLM(reply=_evolve)
    task = make("evol-instruct", llm=llm, num_evolutions=4)
    out = run_one(task, {"instruction": "Write a poem"})
    assert out["mutations"] == [task.operation_for("Write a poem", 0, r) for r in range(4)]  # type: ignore[attr-defined]
    assert set(out["mutations"]) <= set(OPERATIONS)
    for call, operation in zip(llm.calls, out["mutations"], strict=True):
        assert OPERATIONS[operation] in call["input"][-1]["content"]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_evol_mutations_are_the_same_for_the_same_seed(seed: int) -> None:
    instructions = [{"instruction": f"Task number {i}."} for i in range(6)]
    first = make("evol-instruct", llm=ScriptedLLM(reply=_evolve), seed=seed, num_evolutions=3, num_generations=2)
    second = make("evol-instruct", llm=ScriptedLLM(reply=_evolve), seed=seed, num_evolutions=3, num_generations=2)
    mutations = [r["mutations"] for r in run(first, instructions)]
    assert mutations == [r["mutations"] for r in run(second, instructions)]
    other = make("evol-instruct", llm=ScriptedLLM(reply=_evolve), seed=seed + 100, num_evolutions=3, num_generations=2)
    assert mutations != [r["mutations"] for r in run(other, instructions)], "the seed should matter"


def test_evol_generations_are_separate_chains() -> None:
    llm = ScriptedLLM(reply=_evolve)
    task = make("evol-instruct", llm=llm, num_evolutions=2, num_generations=3, group_generations=True)
    out = run_one(task, {"instruction": "Write a poem"})
    assert out["evolved_instruction"] == ["Write a poem + +"] * 3
    assert out["mutations"] == [[task.operation_for("Write a poem", g, r) for r in range(2)] for g in range(3)]  # type: ignore[attr-defined]
    assert len(llm.calls) == 6
    assert all(call["num_generations"] == 1 for call in llm.calls)


def test_evol_operations_can_be_restricted() -> None:
    task = make("evol-instruct", llm=ScriptedLLM(reply=_evolve), operations=["deepen"], num_evolutions=3)
    assert run_one(task, {"instruction": "Write a poem"})["mutations"] == ["deepen"] * 3


@pytest.mark.parametrize("failed", ["", "   ", None, "```\n```"])
def test_evol_a_round_without_an_instruction_fails_the_row_and_keeps_the_rounds(failed: str | None) -> None:
    llm = ScriptedLLM(replies=["Write a sonnet about rain.", failed, "never asked"])
    task = make("evol-instruct", llm=llm, num_evolutions=3)
    out = run_one(task, {"instruction": "Write a poem"})
    assert columns(task, out) == dict.fromkeys(task.output_columns())
    assert len(llm.calls) == 2, "no round after a failed one"
    kept = json.loads(raw_output(task, out))
    assert [r["reply"] for r in kept] == ["Write a sonnet about rain.", failed]


def test_evol_a_first_round_without_text_keeps_no_raw_output() -> None:
    llm = ScriptedLLM(replies=[None])
    task = make("evol-instruct", llm=llm, num_evolutions=3)
    out = run_one(task, {"instruction": "Write a poem"})
    assert columns(task, out) == dict.fromkeys(task.output_columns())
    assert raw_output(task, out) is None
    assert len(llm.calls) == 1


def test_evol_in_a_pipeline_and_a_rerun_asks_nothing_again(tmp_path: Path) -> None:
    rows = [{"instruction": "Write a poem"}, {"instruction": "Add 2 and 3."}, {"instruction": "Name a bird."}]

    def evol(llm: ScriptedAsyncLLM) -> Task:
        return taskloom.get_task("evol-instruct", name="evol", llm=llm, num_evolutions=3, num_generations=2, seed=5)

    first = ScriptedAsyncLLM(reply=_evolve)
    result = Pipeline(evol(first), source=rows, name="p").run(output=tmp_path / "run", progress=None)
    out = list(result.rows())
    assert len(first.calls) == len(rows) * 2 * 3
    assert [r["evolved_instruction"] for r in out[:2]] == ["Write a poem + + +"] * 2
    expected = [[evol(first).operation_for(r["instruction"], g, n) for n in range(3)] for r in rows for g in range(2)]  # type: ignore[attr-defined]
    assert [r["mutations"] for r in out] == expected

    again = ScriptedAsyncLLM(reply=_evolve)
    rerun = Pipeline(evol(again), source=rows, name="p").run(output=tmp_path / "run", progress=None)
    assert again.calls == []
    assert list(rerun.rows()) == out


# -- ultrafeedback --------------------------------------------------------------------------------


def test_ultrafeedback_does_not_show_a_missing_generation_and_aligns_the_results() -> None:
    llm = ScriptedLLM(replies=["Response 1\nRationale: Right.\nRating: 4\n\nResponse 2\nRationale: Wrong.\nRating: 2"])
    task = make("ultrafeedback", llm=llm)
    out = run_one(task, {"instruction": "2+2?", "generations": ["four", None, "five"]})
    assert out["ratings"] == [4, None, 2]
    assert out["rationales"] == ["Right.", None, "Wrong."]
    shown = prompt(llm)
    assert "reviewing 2 responses" in shown
    assert "## Response 2\nfive" in shown
    assert "## Response 3" not in shown
    assert "None" not in shown


def test_ultrafeedback_json_counts_only_the_shown_generations() -> None:
    reply = '{"assessments": [{"rationale": "Right.", "rating": 4}, {"rationale": "Wrong.", "rating": 2}]}'
    task = make("ultrafeedback", reply)
    out = run_one(task, {"instruction": "2+2?", "generations": [None, "four", "five", None]})
    assert out["ratings"] == [None, 4, 2, None]
    assert out["rationales"] == [None, "Right.", "Wrong.", None]
    failing = make("ultrafeedback", reply)
    assert run_one(failing, {"instruction": "2+2?", "generations": ["a", "b", "c"]})["ratings"] is None


@pytest.mark.parametrize("aspect", ["helpfulness", "honesty", "instruction-following", "truthfulness", "overall"])
def test_ultrafeedback_aspects_change_the_prompt(aspect: str) -> None:
    from taskloom_tasks.ultrafeedback import ASPECTS

    llm = ScriptedLLM(replies=[SPECS["ultrafeedback"].layout_reply])  # type: ignore[list-item]
    run_one(make("ultrafeedback", llm=llm, aspect=aspect), UF_ROW)
    title, guide, scale = ASPECTS[aspect]
    assert f"**{title}**" in prompt(llm)
    assert guide in prompt(llm)
    assert f"5 = {scale[4]}" in prompt(llm)


# -- text-classification ----------------------------------------------------------------------------

TOPICS = {"politics": "government and elections", "sports": "games and athletes", "science": "research"}


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"explanation": "A game.", "labels": ["sports"]}', "sports"),
        ("A game.\nLabels: Sports", "sports"),
        ("A game.\nLabel: sports.", "sports"),
    ],
)
def test_classification_single_label(reply: str, expected: str) -> None:
    llm = ScriptedLLM(replies=[reply])
    out = run_one(make("text-classification", llm=llm, labels=TOPICS), {"text": "The final went to penalties."})
    assert out["labels"] == expected
    assert out["explanation"] == "A game."
    shown = prompt(llm)
    assert "- sports: games and athletes" in shown
    assert "Choose exactly one label." in shown


@pytest.mark.parametrize(
    "reply",
    [
        '{"explanation": "Both.", "labels": ["sports", "politics"]}',
        '{"explanation": "Both.", "labels": ["Sports", "politics", "sports"]}',
        "Both.\nLabels: sports, politics",
        "Both.\nLabels: politics and sports",
        "Both.\nLabels: sports; politics",
    ],
)
def test_classification_multi_label_in_declared_order(reply: str) -> None:
    llm = ScriptedLLM(replies=[reply])
    task = make("text-classification", llm=llm, labels=TOPICS, multi_label=True)
    out = run_one(task, {"text": "The minister played golf."})
    assert out["labels"] == ["politics", "sports"]
    assert out["explanation"] == "Both."
    assert "Choose every label that applies" in prompt(llm)


def test_classification_multi_label_takes_one_label_too() -> None:
    task = make("text-classification", "Sport.\nLabels: sports", labels=TOPICS, multi_label=True)
    assert run_one(task, {"text": "Goal!"})["labels"] == ["sports"]


@pytest.mark.parametrize(
    ("labels", "message"),
    [(["only"], "at least two labels"), (["Yes", "yes"], "differ other than by case"), ([], "at least two labels")],
)
def test_classification_refuses_bad_label_sets(labels: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        taskloom.get_task("text-classification", llm=ScriptedLLM(), labels=labels)


# -- self-instruct --------------------------------------------------------------------------------


def test_self_instruct_from_a_topic() -> None:
    llm = ScriptedLLM(replies=["1. Compare green and black tea.\n2. Explain how to brew oolong.\n3. Suggest a tea."])
    task = make("self-instruct", llm=llm, num_instructions=3, application="a tea shop's chatbot", criteria="Be brief.")
    assert task.inputs == ["topic"]
    out = run_one(task, {"topic": "tea"})
    assert out["instructions"] == ["Compare green and black tea.", "Explain how to brew oolong.", "Suggest a tea."]
    shown = prompt(llm)
    assert shown.startswith("Write 3 new instructions that a user might give an AI assistant about: tea.")
    assert "for a tea shop's chatbot" in shown
    assert "Be brief." in shown
    assert "example instructions" not in shown


def test_self_instruct_from_seeds() -> None:
    llm = ScriptedLLM(replies=["1. Write a limerick about cats.\n2. Summarise this paragraph in one line."])
    task = make("self-instruct", llm=llm, source="seeds", num_instructions=2)
    assert task.inputs == ["seed_instructions"]
    out = run_one(task, {"seed_instructions": ["Write a poem about snow.", "Summarise this article."]})
    assert out["instructions"] == ["Write a limerick about cats.", "Summarise this paragraph in one line."]
    shown = prompt(llm)
    assert "- Write a poem about snow.\n- Summarise this article.\n" in shown
    assert "about:" not in shown


def test_self_instruct_keeps_at_most_num_instructions() -> None:
    reply = '{"instructions": ["One instruction.", "Two instruction.", "Three instruction."]}'
    out = run_one(make("self-instruct", reply, num_instructions=2), {"topic": "x"})
    assert out["instructions"] == ["One instruction.", "Two instruction."]


def test_self_instruct_seeds_must_be_a_list() -> None:
    task = make("self-instruct", llm=ScriptedLLM(), source="seeds")
    with pytest.raises(ValueError, match="'seed_instructions' must be a list"):
        run(task, [{"seed_instructions": "Write a poem."}])


# -- rubric-judge ----------------------------------------------------------------------------------


class Review(BaseModel):
    rationale: str
    score: int = Field(ge=1, le=10)
    safe: bool
    tone: Literal["warm", "neutral", "cold"]
    confidence: float | None = Field(default=None, ge=0, le=1)


REVIEW_ROW = {"instruction": "Greet a guest.", "generation": "Welcome!"}


def test_rubric_judge_with_a_pydantic_model() -> None:
    reply = '{"rationale": "Warm.", "score": 9, "safe": true, "tone": "warm", "confidence": 0.8}'
    llm = StructuredLLM(replies=[reply])
    task = make("rubric-judge", llm=llm, criteria="Be welcoming.", output_schema=Review)
    assert task.output_columns() == ["rationale", "score", "safe", "tone", "confidence"]
    out = run_one(task, REVIEW_ROW)
    assert columns(task, out) == {"rationale": "Warm.", "score": 9, "safe": True, "tone": "warm", "confidence": 0.8}
    assert llm.calls[0]["kwargs"]["structured_output"] == Review.model_json_schema()
    shown = prompt(llm)
    assert '"score" (an integer at least 1 at most 10)' in shown
    assert "\"tone\" (one of 'warm', 'neutral', 'cold')" in shown
    assert "## Generation\nWelcome!" in shown


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({"score": 11}, id="score-above"),
        pytest.param({"score": 0}, id="score-below"),
        pytest.param({"score": 7.5}, id="score-fraction"),
        pytest.param({"score": "high"}, id="score-text"),
        pytest.param({"safe": "yes"}, id="bool-as-text"),
        pytest.param({"tone": "hot"}, id="tone-not-in-literal"),
        pytest.param({"confidence": 2}, id="optional-above-range"),
        pytest.param({"confidence": "sure"}, id="optional-wrong-type"),
        pytest.param({"tone": None}, id="required-null"),
    ],
)
def test_rubric_judge_enforces_the_models_types_and_ranges(answer: dict[str, Any]) -> None:
    reply = json.dumps({"rationale": "Warm.", "score": 9, "safe": True, "tone": "warm", **answer})
    task = make("rubric-judge", reply, add_raw_output=False, criteria="Be welcoming.", output_schema=Review)
    out = run_one(task, REVIEW_ROW)
    assert columns(task, out) == dict.fromkeys(task.output_columns())
    assert raw_output(task, out) == reply


def test_rubric_judge_reads_whole_numbers_and_leaves_absent_optionals_none() -> None:
    reply = '{"rationale": "Warm.", "score": "9", "safe": false, "tone": "cold"}'
    out = run_one(make("rubric-judge", reply, criteria="c", output_schema=Review), REVIEW_ROW)
    assert (out["score"], out["safe"], out["confidence"]) == (9, False, None)


def test_rubric_judge_shows_the_chosen_columns() -> None:
    llm = ScriptedLLM(replies=['{"rationale": "ok", "score": 3}'])
    task = make("rubric-judge", llm=llm, criteria="Faithful?", columns=["source_text", "summary"])
    assert task.inputs == ["source_text", "summary"]
    run_one(task, {"source_text": "Long text.", "summary": "Short."})
    assert "## Source text\nLong text.\n\n## Summary\nShort." in prompt(llm)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"output_schema": {"type": "array"}}, "schema of an object"),
        ({"output_schema": {"type": "object", "properties": {}}}, "schema of an object"),
        ({"output_schema": {"properties": {"generation": {"type": "string"}}}}, "overwrite the input columns"),
    ],
)
def test_rubric_judge_refuses_bad_schemas(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        taskloom.get_task("rubric-judge", llm=ScriptedLLM(), criteria="c", **fields)


# -- prometheus, scorers, backtranslation: settings -----------------------------------------------------


def test_prometheus_reference_is_required_and_shown() -> None:
    llm = ScriptedLLM(replies=["Feedback: Matches. [RESULT] 5"])
    task = make("prometheus-eval", llm=llm, reference=True)
    assert task.inputs == ["instruction", "generation", "reference"]
    run_one(task, {**PROM_ROW, "reference": "Paris is the capital."})
    assert "## Reference answer (a 5)\nParis is the capital." in prompt(llm)
    plain = ScriptedLLM(replies=["Feedback: ok [RESULT] 5"])
    run_one(make("prometheus-eval", llm=plain), {**PROM_ROW, "reference": "ignored"})
    assert "Reference" not in prompt(plain)


def test_prometheus_rubrics() -> None:
    llm = ScriptedLLM(replies=["Feedback: ok [RESULT] 3"])
    task = make("prometheus-eval", llm=llm, rubric="brevity", rubrics={"brevity": "Is it short? 1: long ... 5: short"})
    run_one(task, PROM_ROW)
    assert "Is it short? 1: long ... 5: short" in prompt(llm)
    with pytest.raises(ValueError, match="unknown rubric 'nope'"):
        taskloom.get_task("prometheus-eval", llm=ScriptedLLM(), rubric="nope")


def test_prometheus_relative_needs_two_generations() -> None:
    task = make("prometheus-eval", llm=ScriptedLLM(), mode="relative")
    with pytest.raises(ValueError, match="exactly 2 generations, got 1"):
        run(task, [{"instruction": "x", "generations": ["a"]}])


def test_scorer_scale_is_shown_and_checked() -> None:
    llm = ScriptedLLM(replies=["Response 1: 3\nResponse 2: 0"])
    task = make("quality-scorer", llm=llm, low=0, high=3)
    assert run_one(task, QUALITY_ROW)["scores"] == [3, 0]
    assert "from 0 (useless or wrong) to 3" in prompt(llm)
    with pytest.raises(ValueError, match="must be below high"):
        taskloom.get_task("quality-scorer", llm=ScriptedLLM(), low=5, high=5)


def test_scorers_score_every_item_in_one_call() -> None:
    llm = ScriptedLLM(replies=['{"scores": [1, 2, 3, 4]}'])
    task = make("complexity-scorer", llm=llm)
    out = run_one(task, {"instructions": ["a", "b", "c", "d"]})
    assert out["scores"] == [1, 2, 3, 4]
    assert len(llm.calls) == 1
    assert "## Instruction 4\nd" in prompt(llm)


@pytest.mark.parametrize(
    ("name", "fields", "row"),
    [
        ("prometheus-eval", {}, {"instruction": "Capital of France?", "generation": "Paris."}),
        ("pairwise-judge", {}, {"instruction": "2+2?", "generations": ["4", "5"]}),
        ("instruction-backtranslation", {}, {"instruction": "2+2?", "generation": "4"}),
        ("ultrafeedback", {}, {"instruction": "2+2?", "generations": ["4", "5"]}),
        ("quality-scorer", {}, {"instruction": "2+2?", "responses": ["4", "5"]}),
    ],
)
def test_a_reply_that_parrots_the_answer_layout_is_not_a_verdict(name: str, fields: dict[str, Any], row: Row) -> None:
    """Small models often copy the prompt's 'how to answer' lines; their placeholders are no answer."""
    probe = get_task(name, llm=ScriptedLLM(), **fields)
    prompt = probe.format_input(row)[-1]["content"]
    layout = prompt[prompt.index("## How to answer") :]
    task = get_task(name, llm=ScriptedLLM(replies=[layout]), **fields)
    task.load()
    [out] = next(task.process([dict(row)]))
    assert all(out[column] is None for column in task.output_columns()), out
    assert out["distilabel_metadata"][f"raw_output_{task.name}"] == layout


@pytest.mark.parametrize(
    ("name", "fields", "row", "reason"),
    [
        ("ultrafeedback", {}, {"instruction": "2+2?", "generations": [None, None]}, "nothing to rate"),
        ("pairwise-judge", {}, {"instruction": "2+2?", "generations": ["4", None]}, "response B is missing"),
        ("pairwise-judge", {"both_orders": True}, {"instruction": "2+2?", "generations": [None, "4"]}, "response A"),
        ("quality-scorer", {}, {"instruction": "2+2?", "responses": []}, "nothing to score"),
        ("complexity-scorer", {}, {"instructions": ["Say hi.", None]}, "instruction 2 of 'instructions' is missing"),
    ],
)
def test_a_row_with_nothing_to_judge_fails_without_a_call(
    name: str, fields: dict[str, Any], row: Row, reason: str
) -> None:
    task = get_task(name, llm=ScriptedLLM(replies=["unused"]), **fields)
    task.load()
    [out] = next(task.process([dict(row)]))
    assert task.llm.calls == []  # type: ignore[attr-defined]
    assert all(out[column] is None for column in task.output_columns())
    assert reason in out["distilabel_metadata"][f"error_{task.name}"]
