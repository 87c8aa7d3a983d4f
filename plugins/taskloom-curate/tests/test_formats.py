"""The TRL format steps: every mode, every reason a row is left out, in pipelines and from YAML.

The input rows are made by the task pack's own judges answering from scripted LLMs, so these
tests read the columns as the judges really write them (``ratings`` aligned with
``generations``, None where a judge could not be read, ``orders_agree``), not as we imagine them.
The output rows are checked against TRL's documented shapes, and, where TRL is installed, with
TRL's own dataset helpers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from taskloom_curate.formats import FormatDPO, FormatKTO, FormatSFT

from taskloom import Pipeline, get_step, get_task
from taskloom.pipeline.config import load_pipeline
from taskloom.pipeline.graph import PipelineError
from taskloom.testing.scripted import ScriptedLLM
from taskloom.typing import ChatType, Row

# -- rows as the pack's judges write them -------------------------------------------------------


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def assessments(*ratings: int) -> str:
    return json.dumps({"assessments": [{"rationale": f"Rated {r}.", "rating": r} for r in ratings]})


def judged(task_name: str, rows: list[Row], replies: list[Any] | None = None, **fields: Any) -> list[Row]:
    """``rows`` after the pack's task ``task_name``, answering from ``replies`` (or ``fields['llm']``)."""
    llm = fields.pop("llm", None) or ScriptedLLM(replies=replies)
    task = get_task(task_name, llm=llm, **fields)
    task.load()
    return [row for batch in task.process([dict(r) for r in rows]) for row in batch]


UF_INPUTS: list[Row] = [
    {"instruction": "What is 2+2?", "generations": ["4", "5", "22"]},
    {"instruction": "Name a colour.", "generations": ["Blue.", "Red."]},
    {"instruction": "Capital of France?", "generations": ["Paris.", None]},
    {"instruction": "Say hi.", "generations": ["Hi!", "Hello."]},
    {"instruction": "Largest planet?", "generations": ["Jupiter.", "Saturn."]},
]
UF_REPLIES = [
    assessments(5, 1, 2),  # a clear pair: "4" over "5"
    assessments(4, 4),  # a tie
    assessments(5),  # one generation failed upstream: only one was rated
    "I like both of them.",  # unreadable: the judge's columns are None
    assessments(4, 3),  # a margin of 1
]


@pytest.fixture(scope="module")
def uf_rows() -> list[Row]:
    rows = judged("ultrafeedback", UF_INPUTS, UF_REPLIES)
    assert [row["ratings"] for row in rows] == [[5, 1, 2], [4, 4], [5, None], None, [4, 3]]
    return rows


def shown(chat: ChatType) -> tuple[str, str]:
    """The two responses a pairwise prompt shows, A then B."""
    content = chat[-1]["content"]
    return (
        content.split("## Response A\n")[1].split("\n\n")[0],
        content.split("## Response B\n")[1].split("\n\n")[0],
    )


GOOD = {"4", "Rome", "Oslo"}


def fair_or_first(chat: ChatType, index: int) -> str:
    """Prefers a GOOD answer wherever it is shown; with none, calls it a tie if equal, else says A."""
    a, b = shown(chat)
    if a in GOOD:
        return "A is right.\nVerdict: A"
    if b in GOOD:
        return "B is right.\nVerdict: B"
    return "Same.\nVerdict: tie" if a == b else "The first one.\nVerdict: A"


PAIR_INPUTS: list[Row] = [
    {"instruction": "What is 2+2?", "generations": ["4", "5"]},  # A, both orders agree
    {"instruction": "Capital of Italy?", "generations": ["Milan", "Rome"]},  # B, both orders agree
    {"instruction": "Pick a fruit.", "generations": ["Apple", "Pear"]},  # A then A: orders disagree
    {"instruction": "Say yes.", "generations": ["Yes", "Yes"]},  # a tie in both orders
]


@pytest.fixture(scope="module")
def pair_rows() -> list[Row]:
    rows = judged("pairwise-judge", PAIR_INPUTS, llm=ScriptedLLM(reply=fair_or_first), both_orders=True)
    assert [(r["verdict"], r["orders_agree"]) for r in rows] == [
        ("A", True),
        ("B", True),
        ("tie", False),
        ("tie", True),
    ]
    return rows


def run(step: Any, rows: Sequence[Row]) -> list[Row]:
    step.load()
    return [row for batch in step.process([dict(r) for r in rows]) for row in batch]


# -- the documented examples ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "fields"),
    [(FormatSFT, {}), (FormatDPO, {}), (FormatKTO, {"threshold": 4})],
    ids=["sft", "dpo", "kto"],
)
def test_each_example_is_what_the_step_makes(cls: Any, fields: dict[str, Any]) -> None:
    given, made = cls.example
    assert run(cls(**fields), [given]) == [made]
    assert cls.__doc__ and "In " in cls.__doc__  # the docstring shows a row in and out too


# -- format-sft ----------------------------------------------------------------------------------


def generated(rows: list[Row], replies: list[Any], **fields: Any) -> list[Row]:
    return judged("text-generation", rows, replies, **fields)


def test_sft_messages_from_text_generation_rows_replace_the_row() -> None:
    rows = generated([{"instruction": "What is 2+2?"}], ["4"])
    assert set(rows[0]) == {"instruction", "generation", "model_name", "distilabel_metadata"}
    assert run(FormatSFT(), rows) == [{"messages": [*user("What is 2+2?"), *assistant("4")]}]


def test_sft_whole_conversations_from_a_messages_column() -> None:
    talk = [*user("Hi"), *assistant("Hello."), *user("How are you?"), *assistant("Well, thanks.")]
    rows = [
        {"messages": talk, "model_name": "m"},
        {"messages": None, "model_name": "m"},  # a conversation that failed
        {"messages": talk[:3], "model_name": "m"},  # ends with the user: nothing to learn
    ]
    step = FormatSFT(messages_column="messages", keep_columns=["model_name"])
    assert run(step, rows) == [{"messages": talk, "model_name": "m"}]
    assert step.dropped() == {"messages is None": 1, "the conversation does not end with an answer": 1}
    assert "instruction" not in step.inputs
    split = FormatSFT(messages_column="messages", style="prompt-completion")
    assert run(split, rows[:1]) == [{"prompt": talk[:3], "completion": talk[3:]}]
    with pytest.raises(ValidationError, match="messages_column reads conversations"):
        FormatSFT(messages_column="messages", style="prompt-completion", conversational=False)
    with pytest.raises(ValueError, match="must hold a list of chat messages"):
        run(FormatSFT(messages_column="messages"), [{"messages": "not a chat"}])


def test_sft_system_prompt_column_and_kept_columns() -> None:
    rows = generated([{"instruction": "Hi", "system_prompt": "Be brief."}], ["Hello."])
    [out] = run(FormatSFT(keep_columns=["model_name"]), rows)
    assert out == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
        ],
        "model_name": "scripted",
    }
    ignored = run(FormatSFT(system_prompt_column=None), rows)
    assert ignored[0]["messages"][0] == {"role": "user", "content": "Hi"}


def test_sft_prompt_completion_conversational_and_standard() -> None:
    rows = [{"instruction": "Hi", "generation": "Hello.", "system_prompt": "Be brief."}]
    conversational = run(FormatSFT(style="prompt-completion"), rows)
    assert conversational == [
        {
            "prompt": [{"role": "system", "content": "Be brief."}, *user("Hi")],
            "completion": assistant("Hello."),
        }
    ]
    # A standard prompt has no system slot: the system prompt is put before the instruction.
    standard = run(FormatSFT(style="prompt-completion", conversational=False), rows)
    assert standard == [{"prompt": "Be brief.\n\nHi", "completion": "Hello."}]
    plain = run(FormatSFT(style="prompt-completion", conversational=False), [{"instruction": "Hi", "generation": "Yo"}])
    assert plain == [{"prompt": "Hi", "completion": "Yo"}]


def test_sft_messages_cannot_be_standard() -> None:
    with pytest.raises(ValidationError, match="conversational by definition"):
        FormatSFT(style="messages", conversational=False)


def test_sft_grouped_generations_give_one_row_each_and_failed_ones_are_counted() -> None:
    rows = generated(
        [{"instruction": "Name a colour."}], ["Blue.", None, "Red."], num_generations=3, group_generations=True
    )
    assert rows[0]["generation"] == ["Blue.", None, "Red."]
    rows[0]["judges"] = ["a", "b", "c"]  # a list aligned with the generations is split with them
    step = FormatSFT(keep_columns=["model_name", "judges"])
    out = run(step, rows)
    assert [(r["messages"][-1]["content"], r["judges"]) for r in out] == [("Blue.", "a"), ("Red.", "c")]
    assert out[0]["model_name"] == rows[0]["model_name"]
    assert step.dropped() == {"generation is None": 1}


def test_sft_reads_the_columns_it_is_told_to() -> None:
    rows: list[Row] = [
        {"question": "Why?", "generations": ["Because.", "No idea."]},
        {"question": None, "generations": ["x"]},
    ]
    step = FormatSFT(instruction_column="question", generation_column="generations")
    assert [r["messages"] for r in run(step, rows)] == [
        [*user("Why?"), *assistant("Because.")],
        [*user("Why?"), *assistant("No idea.")],
    ]
    assert step.dropped() == {"question is None": 1}


def test_a_chat_instruction_is_taken_whole_and_has_no_standard_form() -> None:
    chat = [{"role": "system", "content": "Be kind."}, *user("Hi")]
    rows = [{"messages": chat, "generation": "Hello!"}]
    [out] = run(FormatSFT(instruction_column="messages"), rows)
    assert out == {"messages": [*chat, *assistant("Hello!")]}
    assert rows[0]["messages"] == chat  # the input row is not changed
    with pytest.raises(ValueError, match="has no standard"):
        run(FormatSFT(instruction_column="messages", style="prompt-completion", conversational=False), rows)


# -- format-dpo: from scores ----------------------------------------------------------------------


def test_dpo_best_worst_from_ultrafeedback_and_every_reason_counted(uf_rows: list[Row]) -> None:
    step = FormatDPO()
    out = run(step, uf_rows)
    assert out == [
        {"prompt": user("What is 2+2?"), "chosen": assistant("4"), "rejected": assistant("5")},
        {"prompt": user("Largest planet?"), "chosen": assistant("Jupiter."), "rejected": assistant("Saturn.")},
    ]
    assert step.dropped() == {"tie": 1, "fewer than two scored generations": 1, "ratings is None": 1}


def test_dpo_min_margin(uf_rows: list[Row]) -> None:
    step = FormatDPO(min_margin=2)
    assert [r["chosen"] for r in run(step, uf_rows)] == [assistant("4")]  # 5 - 1 = 4 passes, 4 - 3 does not
    assert step.dropped()["margin below min_margin"] == 1
    with pytest.raises(ValidationError):
        FormatDPO(min_margin=-1)


def test_dpo_standard_strings_and_scores(uf_rows: list[Row]) -> None:
    out = run(FormatDPO(conversational=False, add_scores=True), uf_rows[:1])
    assert out == [{"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "score_chosen": 5, "score_rejected": 1}]
    with pytest.raises(ValidationError, match="add_scores needs pick_by: scores"):
        FormatDPO(pick_by="verdict", add_scores=True)


def test_dpo_best_random_lower_is_seeded_and_independent_of_order() -> None:
    texts = ["best", "b", "c", "d", "e", "f"]
    rows = [
        {"instruction": f"q{i}", "generations": [f"{t}{i}" for t in texts], "ratings": [5, 4, 3, 3, 2, 1]}
        for i in range(40)
    ]

    def picks(seed: int, given: list[Row]) -> dict[str, str]:
        out = run(FormatDPO(pairing="best-random-lower", seed=seed, add_scores=True), given)
        assert all(r["score_chosen"] == 5 and r["score_rejected"] < 5 for r in out)
        return {r["prompt"][0]["content"]: r["rejected"][0]["content"] for r in out}

    first = picks(0, rows)
    assert picks(0, rows[::-1]) == first  # the same pairs whatever order the rows come in
    assert len({rejected[0] for rejected in first.values()}) > 2  # not always the worst, nor one position
    assert picks(1, rows) != first
    # With a margin, only answers at least that far below the best may be picked.
    out = run(FormatDPO(pairing="best-random-lower", min_margin=3, add_scores=True), rows)
    assert {r["score_rejected"] for r in out} <= {2, 1}
    step = FormatDPO(pairing="best-random-lower", min_margin=5)
    assert run(step, rows) == []
    assert step.dropped() == {"margin below min_margin": 40}


def test_dpo_from_a_quality_scorer(uf_rows: list[Row]) -> None:
    rows = judged(
        "quality-scorer",
        [{"instruction": "Name a prime number.", "responses": ["7", "9 is prime.", "2"]}],
        ['{"scores": [5, 1, 6]}'],
    )
    step = FormatDPO(generations_column="responses", scores_column="scores", conversational=False)
    assert run(step, rows) == [{"prompt": "Name a prime number.", "chosen": "2", "rejected": "9 is prime."}]


def test_dpo_unaligned_or_non_numeric_scores() -> None:
    rows: list[Row] = [
        {"instruction": "q", "generations": ["a", "b"], "ratings": [1]},
        {"instruction": "q", "generations": ["a", "b", "c"], "ratings": ["5", 3, 1]},  # "5" is not a score
        {"instruction": None, "generations": ["a", "b"], "ratings": [5, 1]},
    ]
    step = FormatDPO()
    assert [(r["chosen"], r["rejected"]) for r in run(step, rows)] == [(assistant("b"), assistant("c"))]
    assert step.dropped() == {"ratings is not aligned with generations": 1, "instruction is None": 1}


# -- format-dpo: from a pairwise verdict ----------------------------------------------------------


def test_dpo_from_verdicts_in_both_orders(pair_rows: list[Row]) -> None:
    step = FormatDPO(pick_by="verdict")
    assert run(step, pair_rows) == [
        {"prompt": user("What is 2+2?"), "chosen": assistant("4"), "rejected": assistant("5")},
        {"prompt": user("Capital of Italy?"), "chosen": assistant("Rome"), "rejected": assistant("Milan")},
    ]
    assert step.dropped() == {"orders disagree": 1, "tie": 1}


def test_dpo_from_a_verdict_asked_in_one_order() -> None:
    rows = judged(
        "pairwise-judge",
        [{"instruction": "Capital of Norway?", "generations": ["Bergen", "Oslo"]}, PAIR_INPUTS[0]],
        ["B is right.\nVerdict: B", "Verdict: maybe"],
    )
    assert [(r["verdict"], r["orders_agree"]) for r in rows] == [("B", None), (None, None)]
    step = FormatDPO(pick_by="verdict", conversational=False, keep_columns=["verdict"])
    assert run(step, rows) == [{"prompt": "Capital of Norway?", "chosen": "Oslo", "rejected": "Bergen", "verdict": "B"}]
    assert step.dropped() == {"verdict is None": 1}


def test_dpo_verdict_rows_that_are_not_a_pair() -> None:
    rows: list[Row] = [
        {"instruction": "q", "generations": ["a"], "verdict": "A"},
        {"instruction": "q", "generations": [None, "b"], "verdict": "B"},
        {"instruction": "q", "generations": ["a", "b"], "verdict": "C"},
    ]
    step = FormatDPO(pick_by="verdict")
    assert run(step, rows) == []
    assert step.dropped() == {
        "generations is not a pair": 1,
        "generation is None": 1,
        "unknown verdict 'C'": 1,
    }


# -- format-kto -----------------------------------------------------------------------------------


def test_kto_one_row_per_scored_generation(uf_rows: list[Row]) -> None:
    step = FormatKTO(threshold=4, conversational=False)
    out = run(step, uf_rows)
    assert [(r["prompt"], r["completion"], r["label"]) for r in out] == [
        ("What is 2+2?", "4", True),
        ("What is 2+2?", "5", False),
        ("What is 2+2?", "22", False),
        ("Name a colour.", "Blue.", True),
        ("Name a colour.", "Red.", True),
        ("Capital of France?", "Paris.", True),
        ("Largest planet?", "Jupiter.", True),
        ("Largest planet?", "Saturn.", False),
    ]
    assert all(type(r["label"]) is bool for r in out)
    assert step.dropped() == {"generation is None": 1, "ratings is None": 1}


def test_kto_conversational_with_a_gap_and_kept_scores(uf_rows: list[Row]) -> None:
    step = FormatKTO(threshold=5, false_below=3, keep_columns=["ratings"])
    out = run(step, uf_rows[:1])
    assert out == [
        {"prompt": user("What is 2+2?"), "completion": assistant("4"), "label": True, "ratings": 5},
        {"prompt": user("What is 2+2?"), "completion": assistant("5"), "label": False, "ratings": 1},
        {"prompt": user("What is 2+2?"), "completion": assistant("22"), "label": False, "ratings": 2},
    ]
    assert out[0]["prompt"] is not out[1]["prompt"]  # each row its own list
    run(step, uf_rows[4:])
    assert step.dropped() == {"score between false_below and threshold": 2}
    with pytest.raises(ValidationError, match="must not be above threshold"):
        FormatKTO(threshold=3, false_below=4)
    with pytest.raises(ValidationError, match="threshold"):
        FormatKTO()  # type: ignore[call-arg]  # the scale is the judge's: no default would be right for every judge


def test_kto_from_one_generation_and_one_score() -> None:
    rows = judged(
        "instruction-backtranslation",
        [{"instruction": "What is 2+2?", "generation": "4"}, {"instruction": "Hi", "generation": "Bye"}],
        ['{"reason": "Correct.", "score": 5}', '{"reason": "Off.", "score": 1}'],
    )
    step = FormatKTO(threshold=4, generations_column="generation", scores_column="score", conversational=False)
    assert [(r["completion"], r["label"]) for r in run(step, rows)] == [("4", True), ("Bye", False)]
    rows = [
        {"instruction": "q", "generation": "a", "score": None},
        {"instruction": "q", "generations": ["a"], "ratings": [None]},
    ]
    step = FormatKTO(threshold=4, generations_column="generation", scores_column="score")
    assert run(step, rows[:1]) == []
    assert step.dropped() == {"score is None": 1}
    step = FormatKTO(threshold=4)
    assert run(step, rows[1:]) == []
    assert step.dropped() == {"score is None": 1}


def test_empty_lists_are_counted_and_answers_that_are_not_text_are_an_error() -> None:
    sft, kto, dpo = FormatSFT(generation_column="generations"), FormatKTO(threshold=1), FormatDPO()
    empty: list[Row] = [{"instruction": "q", "generations": [], "ratings": []}]
    assert run(sft, empty) == run(kto, empty) == run(dpo, empty) == []
    assert sft.dropped() == kto.dropped() == {"generations is empty": 1}
    assert dpo.dropped() == {"fewer than two scored generations": 1}
    structured: list[Row] = [{"instruction": "q", "generations": [{"answer": 4}, "b"], "ratings": [5, 1]}]
    for step in (sft, kto, dpo, FormatDPO(pick_by="verdict")):
        rows = [{**structured[0], "verdict": "A"}]
        with pytest.raises(ValueError, match="column 'generations' must hold strings"):
            run(step, rows)


# -- columns, pipelines and YAML -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "inputs", "after"),
    [
        (FormatSFT(), {"instruction": True, "system_prompt": False, "generation": True}, ["messages"]),
        (
            FormatSFT(style="prompt-completion", keep_columns=["model_name"]),
            None,
            ["prompt", "completion", "model_name"],
        ),
        (FormatDPO(), {"instruction": True, "system_prompt": False, "generations": True, "ratings": True}, None),
        (
            FormatDPO(pick_by="verdict", add_scores=False, system_prompt_column=None),
            {"instruction": True, "generations": True, "verdict": True, "orders_agree": False},
            ["prompt", "chosen", "rejected"],
        ),
        (FormatDPO(add_scores=True), None, ["prompt", "chosen", "rejected", "score_chosen", "score_rejected"]),
        (FormatKTO(threshold=1, output_mappings={"label": "desirable"}), None, ["prompt", "completion", "desirable"]),
    ],
)
def test_declared_columns(step: Any, inputs: dict[str, bool] | None, after: list[str] | None) -> None:
    if inputs is not None:
        assert step.inputs == inputs
    available = ["instruction", "generations", "generation", "ratings", "verdict", "model_name", "distilabel_metadata"]
    assert step.columns_after(available) == (after or ["prompt", "chosen", "rejected"])


def test_in_a_pipeline_after_the_judge_with_its_drop_counts(tmp_path: Path) -> None:
    judge = get_task("ultrafeedback", name="rate", llm=ScriptedLLM(replies=UF_REPLIES))
    dpo = get_step("format-dpo", name="dpo")
    result = Pipeline(judge >> dpo, source=UF_INPUTS, name="p").run(output=tmp_path / "out", progress=None)
    assert [row["chosen"] for row in result.rows()] == [assistant("4"), assistant("Jupiter.")]
    assert result.stats.steps["dpo"].dropped == {"tie": 1, "fewer than two scored generations": 1, "ratings is None": 1}


def test_a_pipeline_knows_the_format_replaced_the_columns(uf_rows: list[Row]) -> None:
    steps = get_step("format-kto", threshold=4) >> get_step("keep-columns", columns=["instruction"])
    pipeline = Pipeline(steps, source=uf_rows)
    with pytest.raises(PipelineError, match=r"'instruction'.*provide.* only: prompt, completion, label[.]"):
        pipeline.validate()
    missing = Pipeline(get_step("format-dpo", scores_column="scores"), source=uf_rows)
    with pytest.raises(PipelineError, match="'scores'"):
        missing.validate()


def test_from_a_yaml_file(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in UF_INPUTS), encoding="utf-8")
    replies = "\n".join(f"            - {json.dumps(reply)}" for reply in UF_REPLIES)
    (tmp_path / "pipeline.yaml").write_text(
        f"""
name: preferences
source: {{type: jsonl, path: rows.jsonl}}
steps:
  - name: rate
    type: ultrafeedback
    llm:
        type: scripted
        replies:
{replies}
  - name: kto
    type: format-kto
    threshold: 4
    false_below: 2
    conversational: false
    keep_columns: [model_name]
""",
        encoding="utf-8",
    )
    config = load_pipeline(tmp_path / "pipeline.yaml")
    result = config.pipeline.run(output=tmp_path / "out", progress=None)
    rows = list(result.rows())
    assert [(r["completion"], r["label"]) for r in rows] == [
        ("4", True),
        ("5", False),
        ("Blue.", True),
        ("Red.", True),
        ("Paris.", True),
        ("Jupiter.", True),
    ]
    assert set(rows[0]) == {"prompt", "completion", "label", "model_name"}
    assert result.stats.steps["kto"].dropped == {
        "score between false_below and threshold": 2,  # "22" rated 2, "Saturn." rated 3
        "generation is None": 1,
        "ratings is None": 1,
    }


# -- the rows are what TRL reads ------------------------------------------------------------------

TRL_KEYS = [
    {"messages"},
    {"prompt", "completion"},
    {"prompt", "chosen", "rejected"},
    {"prompt", "completion", "label"},
]
"""The column sets of TRL's dataset types that these steps make (language modeling,
prompt-completion, preference with an explicit prompt, unpaired preference)."""


def is_message_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and set(m) == {"role", "content"} and isinstance(m["content"], str) for m in value)
    )


def all_formats(uf_rows: list[Row], pair_rows: list[Row]) -> dict[str, list[Row]]:
    made: dict[str, list[Row]] = {}
    for conversational in (True, False):
        kind = "conversational" if conversational else "standard"
        if conversational:
            made["sft messages"] = run(FormatSFT(generation_column="generations"), uf_rows)
        made[f"sft prompt-completion {kind}"] = run(
            FormatSFT(style="prompt-completion", generation_column="generations", conversational=conversational),
            uf_rows,
        )
        made[f"dpo {kind}"] = run(FormatDPO(conversational=conversational), uf_rows)
        made[f"dpo verdict {kind}"] = run(FormatDPO(pick_by="verdict", conversational=conversational), pair_rows)
        made[f"kto {kind}"] = run(FormatKTO(threshold=4, conversational=conversational), uf_rows)
    return made


def test_rows_have_the_documented_shapes(uf_rows: list[Row], pair_rows: list[Row]) -> None:
    for name, rows in all_formats(uf_rows, pair_rows).items():
        assert rows, name
        for row in rows:
            assert set(row) in TRL_KEYS, name
            conversational = "standard" not in name
            for key, value in row.items():
                if key == "label":
                    assert type(value) is bool
                elif conversational:
                    assert is_message_list(value), (name, key)
                    roles = [m["role"] for m in value]
                    if key in ("chosen", "rejected", "completion"):
                        assert roles == ["assistant"]
                    elif key == "prompt":
                        assert roles[-1] == "user"
                    else:
                        assert roles[-2:] == ["user", "assistant"]
                else:
                    assert isinstance(value, str), (name, key)


def test_rows_load_into_a_dataset_with_one_type_per_column(uf_rows: list[Row], pair_rows: list[Row]) -> None:
    datasets = pytest.importorskip("datasets")
    for name, rows in all_formats(uf_rows, pair_rows).items():
        dataset = datasets.Dataset.from_list(rows)
        assert dataset.num_rows == len(rows), name
        assert dataset[0] == rows[0], name


def tiny_chat_tokenizer() -> Any:
    """A tokenizer built in memory with a plain chat template, so TRL's helpers run offline."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    model = tokenizers.models.WordLevel({"[UNK]": 0, "<eos>": 1}, unk_token="[UNK]")
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizers.Tokenizer(model), unk_token="[UNK]", eos_token="<eos>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    return tokenizer


def test_trl_reads_the_rows(uf_rows: list[Row], pair_rows: list[Row]) -> None:
    pytest.importorskip("trl")
    data_utils = pytest.importorskip("trl.data_utils")
    datasets = pytest.importorskip("datasets")
    tokenizer = tiny_chat_tokenizer()
    for name, rows in all_formats(uf_rows, pair_rows).items():
        conversational = "standard" not in name
        for row in rows:
            assert data_utils.is_conversational(row) is conversational, name
            rendered = data_utils.maybe_apply_chat_template(row, tokenizer)
            if not conversational:
                assert rendered == row
                continue
            if "messages" in row:
                assert rendered["text"].endswith(f"<assistant>{row['messages'][-1]['content']}</assistant>")
                continue
            assert rendered["prompt"].endswith("</user><assistant>")
            for key in ("chosen", "rejected", "completion"):
                if key in row:
                    assert rendered[key] == f"{row[key][0]['content']}</assistant>", (name, key)
        dataset = datasets.Dataset.from_list(rows)
        assert data_utils.maybe_extract_prompt(dataset[0]) == dataset[0], name  # the prompt is explicit

    # Unpairing our preference rows (TRL's way from DPO data to KTO data) gives our own KTO rows.
    dpo = datasets.Dataset.from_list(run(FormatDPO(conversational=False), uf_rows))
    unpaired = data_utils.maybe_unpair_preference_dataset(dpo)
    assert set(unpaired.column_names) == {"prompt", "completion", "label"}
    kto = run(FormatKTO(threshold=4, conversational=False), uf_rows)
    assert {(r["prompt"], r["completion"], r["label"]) for r in unpaired} <= {
        (r["prompt"], r["completion"], r["label"]) for r in kto
    }


def test_the_formats_are_registered() -> None:
    for name, cls in [("format-sft", FormatSFT), ("format-dpo", FormatDPO), ("format-kto", FormatKTO)]:
        fields: dict[str, Any] = {"threshold": 1} if cls is FormatKTO else {}
        step = get_step(name, **fields)
        assert type(step) is cls and step.name == name
