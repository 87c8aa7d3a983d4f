"""The readers behind every task: what real judges write, well-formed, messy and malformed."""

from __future__ import annotations

import enum
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field
from taskloom_tasks.parsing import (
    check_score,
    clean_item,
    field_text,
    find_json,
    find_score,
    find_scores,
    is_json_reply,
    list_items,
    match_label,
    mentioned_labels,
    split_sections,
)
from taskloom_tasks.schema_check import check_object
from taskloom_tasks.verdicts import find_verdict, swap

# -- JSON ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"score": 4}', {"score": 4}),
        ('  \n{"score": 4}\n  ', {"score": 4}),
        ('```json\n{"score": 4}\n```', {"score": 4}),
        ('```\n{"score": 4}\n```', {"score": 4}),
        ('```JSON {"score": 4}```', {"score": 4}),
        ('Sure! Here is my answer: {"score": 4} Hope it helps.', {"score": 4}),
        ('My evaluation:\n```json\n{"a": [1, {"b": 2}]}\n```\nAlso {"c": 3}', {"a": [1, {"b": 2}]}),
        ("[1, 2]", [1, 2]),
        ('Scores follow: [] then {"scores": [3]}', {"scores": [3]}),  # an empty list is no answer
        ('We use {braces} in prose, then {"ok": true}', {"ok": True}),
        ('{"text": "a } inside a string"}', {"text": "a } inside a string"}),
    ],
)
def test_find_json_reads_bare_fenced_and_embedded(text: str, expected: Any) -> None:
    assert find_json(text) == expected


@pytest.mark.parametrize("text", ["", "no json here", '{"score": 4', "{'score': 4}", "Say [] only", "{not json}"])
def test_find_json_without_an_object_raises(text: str) -> None:
    with pytest.raises(ValueError, match="no JSON"):
        find_json(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', True),
        ('```json\n{"a": 1}\n```', True),
        ("  [1, 2]  ", True),
        ('Here: {"a": 1}', False),
        ('```json\n{"a": 1}\n```\nThat is my answer.', False),
        ("4", False),  # a bare number is a prose answer that happens to be valid JSON
        ('"negative"', False),
        ("Verdict: A", False),
    ],
)
def test_is_json_reply_only_for_a_whole_object_or_array(text: str, expected: bool) -> None:
    assert is_json_reply(text) is expected


# -- scores --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Rating: 4", 4),
        ("rating:4", 4),
        ("Score: 4/5", 4),
        ("**Score:** 4 out of 5", 4),
        ("[RESULT] 3", 3),
        ("four", 4),
        ("Rating: Four", 4),
        ("Rating (1-5): 2", 2),
        ("grade = 2", 2),
        ("Overall: 5", 5),
        ("4", 4),
        ("**4**", 4),
        ("4.0", 4),
        ("I would give it 4/5.", 4),
        ("The response is accurate but terse.\nScore: 3", 3),
        ("Score: 2 at first glance... on reflection, Final score: 5", 5),  # the conclusion wins
    ],
)
def test_find_score_reads_what_judges_write(text: str, expected: int) -> None:
    assert find_score(text, 1, 5) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Rating: 7", "outside 1-5"),
        ("Score: 0", "outside 1-5"),
        ("Score: 6/5", "outside 1-5"),
        ("[RESULT] ten", "outside 1-5"),
        ("Score: 4.5", "not a whole number"),
        ("The answer is good.", "no score"),
        ("I would give it 4/10.", "no score"),  # a fraction over another scale is not this score
        ("", "no score"),
    ],
)
def test_find_score_refuses_out_of_range_and_missing(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        find_score(text, 1, 5)


def test_find_score_uses_the_given_scale() -> None:
    assert find_score("Score: 6", 1, 6) == 6
    assert find_score("Score: 0", 0, 10) == 0
    with pytest.raises(ValueError, match="outside 1-6"):
        find_score("Score: 7", 1, 6)


def test_find_scores_in_order_and_fractions_only_over_the_top() -> None:
    assert find_scores("Rating: 4\nRating: 2\n[RESULT] 5", 1, 5) == [4, 2, 5]
    assert find_scores("Response 1 gets 4/5, Response 2 gets 3/5", 1, 5) == [4, 3]
    assert find_scores("It is 2/3 done, 1/2 right", 1, 5) == []
    assert find_scores("no scores here", 1, 5) == []
    with pytest.raises(ValueError, match="outside"):
        find_scores("Rating: 4\nRating: 9", 1, 5)  # a score on another scale is an error, not skipped


@pytest.mark.parametrize(
    ("value", "expected"),
    [(4, 4), (4.0, 4), ("4", 4), (" 4 ", 4), ("4/5", 4), ("four", 4), ("Five", 5), (1, 1), (5, 5)],
)
def test_check_score_accepts(value: Any, expected: int) -> None:
    score = check_score(value, 1, 5)
    assert score == expected
    assert type(score) is int


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (7, "outside 1-5"),
        (0, "outside 1-5"),
        ("seven", "outside 1-5"),
        (4.5, "not a whole number"),
        (None, "not a whole number"),
        (True, "not a number"),
        ("high", "not a number"),
        ([4], "not a whole number"),
        ("<an integer from 1 to 5>", "not a number"),  # the prompt's own layout, parroted
        ("4 because it is good", "not a number"),
    ],
)
def test_check_score_refuses(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_score(value, 1, 5)


# -- labelled text and sections --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Rationale: Correct and direct.\nRating: 5", "Correct and direct."),
        ("**Rationale:** spans\ntwo lines\nRating: 5", "spans\ntwo lines"),
        ("Rating: 5\nReason: last field runs to the end", "last field runs to the end"),
        ("Rationale:\nOn the next line.\nRating: 5", "On the next line."),
        ("Rationale:\nRating: 5", None),  # empty: not the next label's line
        ("No labels at all", None),
    ],
)
def test_field_text(text: str, expected: str | None) -> None:
    assert field_text(text, "rationale", "reason") == expected


@pytest.mark.parametrize(
    "text",
    [
        "Response 1\nRating: 4\n\nResponse 2\nRating: 2",
        "#### Output for Text 1\nRating: 4\n#### Output for Text 2\nRating: 2",
        "[Response 1] Score: 4\n[Response 2] Score: 2",
        "**Response 1:** Rating: 4\n**Response 2:** Rating: 2",
        "Preamble that mentions response 2 inline.\nText 1\nRating: 4\nText 2\nRating: 2",
    ],
)
def test_split_sections(text: str) -> None:
    sections = split_sections(text, 2)
    assert sections is not None
    assert [find_score(s, 1, 5) for s in sections] == [4, 2]


def test_split_sections_needs_every_heading_in_order() -> None:
    assert split_sections("Response 1\nRating: 4", 2) is None
    assert split_sections("Response 2\nRating: 4\nResponse 1\nRating: 3", 2) is None
    assert split_sections("Rating: 4\nRating: 3", 2) is None
    assert split_sections("Instruction 1: 4\nInstruction 2: 3", 2, names="instruction") is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '1. First thing\n2) Second thing\n- third\n* "Fourth quoted"\n• fifth\n(6) sixth',
            ["First thing", "Second thing", "third", "Fourth quoted", "fifth", "sixth"],
        ),
        ("Here are two:\n1. one item\n2. two item", ["one item", "two item"]),  # lead-in without a marker
        ("1. **Bold item**\n2. 'single quoted'\n3. `code`", ["Bold item", "single quoted", "code"]),
        ("plain one\n\nplain two\nplain one", ["plain one", "plain two"]),  # no markers: lines, deduplicated
        ("1. same\n2. same\n3. other", ["same", "other"]),
        ("", []),
    ],
)
def test_list_items(text: str, expected: list[str]) -> None:
    assert list_items(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("- item", "item"), ("12. item", "item"), ('"item"', "item"), ("**item**", "item"), ("## item", "item")],
)
def test_clean_item(text: str, expected: str) -> None:
    assert clean_item(text) == expected


# -- labels --------------------------------------------------------------------------------------

LABELS = ["positive", "negative", "Mixed-Feelings"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("negative", "negative"),
        ("NEGATIVE", "negative"),
        (" Negative. ", "negative"),
        ('"negative"', "negative"),
        ("'negative'!", "negative"),
        ('"NEGATIVE".', "negative"),  # the period after the quotes
        ("**negative**", "negative"),
        ("- negative", "negative"),
        ("mixed-feelings", "Mixed-Feelings"),  # the label as declared, not as written
        ("neutral", None),
        ("negativeish", None),
        ("not negative", None),
        ("", None),
    ],
)
def test_match_label(value: str, expected: str | None) -> None:
    assert match_label(value, LABELS) == expected


def test_mentioned_labels_whole_words_in_order_of_appearance() -> None:
    text = "Mostly NEGATIVE, though some positive notes; not mixed-feelingsish."
    assert mentioned_labels(text, LABELS) == ["negative", "positive"]
    assert mentioned_labels("Positive-leaning but negative", LABELS) == ["negative"]
    assert mentioned_labels("nothing", LABELS) == []


# -- verdicts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A", "A"),
        ("b", "B"),
        ("tie", "tie"),
        ("Draw.", "tie"),
        ("[[A]]", "A"),
        ("[[B]]", "B"),
        ("[[C]]", "tie"),  # MT-Bench's tie
        ("Assistant A is more accurate.\n\n[[A]]", "A"),
        ("Verdict: Response A", "A"),
        ("Verdict: tie", "tie"),
        ("My final verdict is: [[A>>B]]", "A"),
        ("Assistant B is slightly better: [[B>A]]", "B"),
        ("Tie, relatively the same: [[A=B]]", "tie"),
        ("Output (a)", "A"),
        ("Output (b)", "B"),
        ("Winner: B", "B"),
        ("Better response: (B)", "B"),
        ("Response B is better", "B"),
        ("Response A is clearly better than B.", "A"),
        ("Output B was more accurate.", "B"),
        ("I prefer response B.", "B"),
        ("It's a tie", "tie"),
        ("Both responses are equal in quality.", "tie"),
        ("**Final verdict:** [[A]]", "A"),
        ("Response A", "A"),
        ("(B)", "B"),
        ("At first [[A]] seemed right; after checking the maths: [[B]]", "B"),  # the last one counts
        ("A is shorter; B is right.\nVerdict: B", "B"),
    ],
)
def test_find_verdict(text: str, expected: str) -> None:
    assert find_verdict(text) == expected


@pytest.mark.parametrize("text", ["", "I cannot decide.", "Both have merits.", "Option D"])
def test_find_verdict_without_one_raises(text: str) -> None:
    with pytest.raises(ValueError, match="names no verdict"):
        find_verdict(text)


@pytest.mark.parametrize("text", ["tie", "[[C]]", "It's a tie", "Verdict: draw"])
def test_a_tie_is_refused_when_not_allowed(text: str) -> None:
    assert find_verdict(text) == "tie"
    with pytest.raises(ValueError, match="must pick A or B"):
        find_verdict(text, allow_tie=False)


def test_find_verdict_without_ties_still_reads_a_and_b() -> None:
    assert find_verdict("[[B]]", allow_tie=False) == "B"


@pytest.mark.parametrize(("verdict", "swapped"), [("A", "B"), ("B", "A"), ("tie", "tie")])
def test_swap(verdict: Any, swapped: str) -> None:
    assert swap(verdict) == swapped
    assert swap(swap(verdict)) == verdict


# -- schema checks -------------------------------------------------------------------------------

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rationale": {"type": "string"},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "passed": {"type": "boolean"},
        "tone": {"type": "string", "enum": ["warm", "cold"]},
        "tags": {"type": "array"},
        "note": {"type": ["string", "null"]},
    },
    "required": ["rationale", "score"],
}


def test_check_object_keeps_valid_values_and_fills_absent_optionals() -> None:
    data = {"rationale": "ok", "score": 3, "confidence": 0.5, "passed": False, "tone": "warm", "tags": ["x"]}
    assert check_object(data, SCHEMA) == {**data, "note": None}
    assert check_object({"rationale": "ok", "score": 1}, SCHEMA) == {
        "rationale": "ok",
        "score": 1,
        "confidence": None,
        "passed": None,
        "tone": None,
        "tags": None,
        "note": None,
    }


@pytest.mark.parametrize(
    ("value", "expected"), [(4, 4), (4.0, 4), ("4", 4), (" 4 ", 4)]
)  # whole numbers written as floats or strings are read as integers
def test_check_object_coerces_whole_numbers_to_integers(value: Any, expected: int) -> None:
    out = check_object({"rationale": "ok", "score": value}, SCHEMA)
    assert out["score"] == expected
    assert type(out["score"]) is int


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"score": 6}, "above the maximum 5"),
        ({"score": 0}, "below the minimum 1"),
        ({"score": 4.5}, "should be integer"),
        ({"score": True}, "should be integer"),
        ({"score": "four"}, "should be integer"),
        ({"score": None}, "should be integer"),  # required, so None is not allowed
        ({"confidence": 1.5}, "above the maximum 1"),
        ({"confidence": "high"}, "should be number"),
        ({"passed": "yes"}, "should be boolean"),
        ({"passed": 1}, "should be boolean"),
        ({"tone": "lukewarm"}, "should be one of"),
        ({"tags": "x"}, "should be array"),
        ({"rationale": 5}, "should be string"),
        ({"note": 5}, "should be string or null"),
    ],
)
def test_check_object_refuses_wrong_types_enums_and_ranges(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_object({"rationale": "ok", "score": 3, **changes}, SCHEMA)


def test_check_object_requires_an_object_with_required_keys() -> None:
    with pytest.raises(ValueError, match="lacks \\['score'\\]"):
        check_object({"rationale": "ok"}, SCHEMA)
    for data in ([1, 2], "text", None):
        with pytest.raises(ValueError, match="not a JSON object"):
            check_object(data, SCHEMA)


class Tone(enum.StrEnum):
    warm = "warm"
    cold = "cold"


class Answer(BaseModel):
    rationale: str
    score: int = Field(ge=1, le=10)
    maybe: int | None = Field(default=None, ge=1, le=3)
    tone: Tone
    mood: Literal["calm", "tense"] = "calm"


def test_check_object_follows_pydantic_schemas_refs_and_optionals() -> None:
    schema = Answer.model_json_schema()
    good = {"rationale": "ok", "score": 10, "maybe": 2, "tone": "cold", "mood": "tense"}
    assert check_object(good, schema) == good
    assert check_object({**good, "maybe": None}, schema)["maybe"] is None
    for changes, message in [
        ({"score": 11}, "above the maximum 10"),
        ({"maybe": 4}, "above the maximum 3"),  # Optional[int] with a range: anyOf [integer, null]
        ({"maybe": "two"}, "should be integer"),
        ({"tone": "hot"}, "should be one of"),  # an Enum class: a $ref into $defs
        ({"tone": 1}, "should be string"),
        ({"mood": "happy"}, "should be one of"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_object({**good, **changes}, schema)


def test_list_items_split_a_numbered_list_written_on_one_line() -> None:
    text = "Here are three instructions: 1. Water the basil; 2. Plan a raised bed. 3. Compost the leaves."
    assert list_items(text) == ["Water the basil", "Plan a raised bed.", "Compost the leaves."]
