"""The ``deduplicate`` step: planted duplicates found, the first kept, in order, in a pipeline too."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError
from taskloom_curate.dedup import Deduplicate, DeduplicateColumnError, normalise

from taskloom import Pipeline, get_step, get_task
from taskloom.pipeline.config import load_pipeline
from taskloom.testing.scripted import ScriptedAsyncLLM
from taskloom.typing import ChatType, GenerateOutput, Row


def paragraphs(seed: int = 7, count: int = 300) -> tuple[list[Row], dict[int, int], set[int]]:
    """Rows of ~200 words, with planted copies: (rows, each copy's original, the exact copies).

    A copy comes after the row it copies and is that row with one to four words replaced (a near
    copy, Jaccard about 0.9 or more) or with its case, punctuation and spacing changed (an exact
    copy once normalised). One row in ten is a loose rewrite of an earlier one (a third of its words
    replaced, Jaccard about 0.4): not a duplicate, there to catch a step that drops too much. Words
    are drawn Zipf-like from a made-up vocabulary, so common phrases recur across rows as in text.
    """
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocabulary = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(3000)]
    weights = [1 / rank for rank in range(1, len(vocabulary) + 1)]
    originals: list[tuple[int, list[str]]] = []
    rows: list[Row] = []
    copies: dict[int, int] = {}
    exact: set[int] = set()
    for position in range(count):
        roll = rng.random()
        source, words = rng.choice(originals) if originals else (position, [])
        if originals and roll < 0.2:  # a near copy
            words = list(words)
            for _ in range(rng.randint(1, 4)):
                words[rng.randrange(len(words))] = rng.choice(vocabulary)
            text = " ".join(words)
            copies[position] = source
        elif originals and roll < 0.3:  # an exact copy, once normalised
            text = "  ".join(word.upper() if i % 7 == 0 else word for i, word in enumerate(words)) + "!"
            text = text.replace(words[3], f"«{words[3]}»", 1)
            copies[position] = source
            exact.add(position)
        elif originals and roll < 0.4:  # a loose rewrite: kept
            words = list(words)
            for index in rng.sample(range(len(words)), len(words) // 3):
                words[index] = rng.choice(vocabulary)
            text = " ".join(words)
        else:
            words = rng.choices(vocabulary, weights, k=rng.randint(180, 220))
            originals.append((position, words))
            text = " ".join(words) + "."
        rows.append({"id": position, "text": text})
    return rows, copies, exact


def run(step: Deduplicate, rows: list[Row]) -> list[Row]:
    step.load()
    out = [row for one in rows for row in next(step.process([dict(one)]))]
    step.unload()
    return out


def test_planted_duplicates_are_found_with_high_precision_and_recall(tmp_path: Path) -> None:
    rows, copies, _ = paragraphs()
    kept = run(Deduplicate(columns="text", duplicates_to=str(tmp_path / "dups.jsonl")), rows)
    dropped = {row["id"] for row in rows} - {row["id"] for row in kept}
    found = dropped & set(copies)
    precision, recall = len(found) / len(dropped), len(found) / len(copies)
    assert len(copies) > 50 and precision >= 0.95 and recall >= 0.95, (precision, recall)
    assert [row["id"] for row in kept] == sorted(row["id"] for row in kept)  # input order
    # Each copy is dropped as a duplicate of its original, the first occurrence, which is kept.
    records = [json.loads(line) for line in (tmp_path / "dups.jsonl").read_text().splitlines()]
    named = [r for r in records if r["position"] in copies and r["duplicate_of"] == copies[r["position"]]]
    assert len(named) >= 0.95 * len(copies)
    assert {r["duplicate_of"] for r in records} <= {row["id"] for row in kept}


def test_the_first_occurrence_is_kept_and_the_others_name_it(tmp_path: Path) -> None:
    text = " ".join(f"word{i}" for i in range(60))
    rows = [{"id": 0, "text": "something else entirely"}, {"id": 1, "text": text}]
    rows += [{"id": 2, "text": text.replace("word30", "other")}, {"id": 3, "text": text.upper()}]
    step = Deduplicate(columns="text", duplicates_to=str(tmp_path / "dups.jsonl"))
    assert [row["id"] for row in run(step, rows)] == [0, 1]
    records = [json.loads(line) for line in (tmp_path / "dups.jsonl").read_text().splitlines()]
    assert [(r["position"], r["duplicate_of"], r["row"]["id"]) for r in records] == [(2, 1, 2), (3, 1, 3)]
    assert 0.8 <= records[0]["similarity"] < 1.0 and records[1]["similarity"] == 1.0
    assert {r["reason"] for r in records} == {"duplicate of an earlier row"}


def test_exact_drops_only_rows_equal_once_normalised() -> None:
    rows, copies, exact = paragraphs()
    step = Deduplicate(columns="text", method="exact")
    kept = run(step, rows)
    assert {row["id"] for row in rows} - {row["id"] for row in kept} == exact
    assert exact < set(copies) and step.dropped() == {"exact duplicate of an earlier row": len(exact)}


def test_normalisation_folds_form_case_punctuation_and_spacing_but_keeps_marks_and_symbols() -> None:
    assert normalise("  \uff21\uff22\uff23\u00a0Straße,\t“quoted”…  end.Next  ") == "abc strasse quoted end next"
    assert normalise("हिन्दी भाषा") == "हिन्दी भाषा"  # vowel signs and virama are marks, not punctuation
    assert normalise("2 < 3!") == "2 < 3" != normalise("2 > 3")  # symbols kept, unlike punctuation


def test_the_side_file_holds_every_dropped_row_and_is_written_anew(tmp_path: Path) -> None:
    side = tmp_path / "sub" / "dups.jsonl"
    rows: list[Row] = [{"text": "a b c d"}, {"text": None}, {"other": 1}, {"text": "A, b c d."}]
    step = Deduplicate(columns="text", method="exact", duplicates_to=str(side))
    assert run(step, rows) == [{"text": "a b c d"}]
    assert [json.loads(line) for line in side.read_text().splitlines()] == [
        {"reason": "text is None", "position": 1, "duplicate_of": None, "similarity": None, "row": rows[1]},
        {"reason": "text is missing", "position": 2, "duplicate_of": None, "similarity": None, "row": rows[2]},
        {
            "reason": "exact duplicate of an earlier row",
            "position": 3,
            "duplicate_of": 0,
            "similarity": 1.0,
            "row": rows[3],
        },
    ]
    step.load()  # a rerun starts over: an empty side file, and no memory of the last run's rows
    assert next(step.process([{"text": "a b c d"}])) == [{"text": "a b c d"}]
    step.unload()
    assert side.read_text() == "" and step.dropped() == {}


def test_several_columns_and_list_values_are_compared_joined() -> None:
    step = Deduplicate(columns=["prompt", "answers"], method="exact")
    rows = [
        {"id": 0, "prompt": "Name a river", "answers": ["Rhine", "Danube"]},
        {"id": 1, "prompt": "name a river.", "answers": ["rhine", "danube"]},  # the same, normalised
        {"id": 2, "prompt": "Name a river", "answers": ["Rhine"]},
        {"id": 3, "prompt": "Name a", "answers": ["river Rhine", "Danube"]},  # the same words, moved across
        {"id": 4, "prompt": "Name a river", "answers": ["Rhine Danube"]},  # two items are not one
        {"id": 5, "prompt": "Name a river"},
    ]
    assert [row["id"] for row in run(step, rows)] == [0, 2, 3, 4]
    assert step.dropped() == {"exact duplicate of an earlier row": 1, "answers is missing": 1}
    numbers = Deduplicate(columns=["n", "meta"], method="exact")
    same = [{"n": 1, "meta": {"a": 1, "b": 2}}, {"n": 1, "meta": {"b": 2, "a": 1}}, {"n": 2, "meta": {}}]
    assert len(run(numbers, same)) == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("threshold", 0),
        ("threshold", 1.5),
        ("shingle_size", 0),
        ("num_perm", 1),
        ("num_perm", 100_000),
        ("seed", -1),
        ("method", "fuzzy"),
        ("shingle_unit", "bytes"),
        ("columns", []),
        ("columns", ""),
        ("columns", ["a", "a"]),
    ],
)
def test_bad_settings_are_refused_naming_the_field(field: str, value: Any) -> None:
    settings: dict[str, Any] = {"columns": "text", field: value}
    with pytest.raises(ValidationError, match=field):
        Deduplicate(**settings)
    step = Deduplicate(columns="text")
    with pytest.raises(ValidationError, match=field):
        setattr(step, field, value)


def test_threshold_shingles_permutations_and_seed_change_what_is_compared(tmp_path: Path) -> None:
    rng = random.Random(3)
    words = [f"w{rng.randrange(10_000)}" for _ in range(200)]
    loose = list(words)
    for index in rng.sample(range(200), 12):  # about 36 of 198 shingles changed: Jaccard about 0.7
        loose[index] = f"x{index}"
    pair = [{"text": " ".join(words)}, {"text": " ".join(loose)}]
    assert len(run(Deduplicate(columns="text"), pair)) == 2
    assert len(run(Deduplicate(columns="text", threshold=0.5), pair)) == 1
    # One-word shingles make a reordering a duplicate; three-word ones do not.
    shuffled = [{"text": " ".join(words)}, {"text": " ".join(reversed(words))}]
    assert len(run(Deduplicate(columns="text", shingle_size=1), shuffled)) == 1
    assert len(run(Deduplicate(columns="text", shingle_size=3), shuffled)) == 2

    def similarity(**settings: Any) -> float:
        """The estimate for the pair: with a threshold that low, the second row is its duplicate."""
        side = tmp_path / "dups.jsonl"
        run(Deduplicate(columns="text", threshold=0.05, duplicates_to=str(side), **settings), pair)
        estimate: float = json.loads(side.read_text())["similarity"]
        return estimate

    assert similarity(seed=5) == similarity(seed=5)  # reproducible
    estimates = {similarity(seed=seed) for seed in range(6)}
    assert len(estimates) > 1 and all(0.55 < e < 0.85 for e in estimates)
    coarse = similarity(num_perm=64)  # a fraction of 64 slots
    assert (coarse * 64).is_integer() and similarity(num_perm=256) != coarse


def test_a_high_threshold_over_few_permutations_still_works() -> None:
    # datasketch picks a single LSH band here, and refuses it; the step uses two.
    text = " ".join(f"w{i}" for i in range(100))
    rows = [{"text": text}, {"text": text + " more"}, {"text": text.replace("w50", "v50")}]
    assert len(run(Deduplicate(columns="text", threshold=0.95, num_perm=16), rows)) >= 1
    assert run(Deduplicate(columns="text", threshold=1.0, num_perm=16), [rows[0], rows[0]]) == [rows[0]]


def test_character_shingles_find_copies_in_text_written_without_spaces() -> None:
    text = "長江は中国で最も長い川であり、青海省から東シナ海まで流れている。流域には多くの都市がある。"
    rows = [{"text": text}, {"text": text.replace("多くの", "沢山の")}]
    assert len(run(Deduplicate(columns="text"), rows)) == 2  # two sentences: two "words" a row
    assert len(run(Deduplicate(columns="text", shingle_unit="characters", shingle_size=3, threshold=0.7), rows)) == 1


def test_in_a_pipeline_the_drops_are_counted_and_the_rows_pass_unchanged(tmp_path: Path) -> None:
    rows, copies, _ = paragraphs(count=120)
    result = Pipeline(get_step("deduplicate", columns="text"), source=rows).run(output=tmp_path / "out", progress=None)
    out = list(result.rows())
    kept_ids = [row["id"] for row in out]
    assert kept_ids == sorted(kept_ids) and set(kept_ids).isdisjoint(copies)
    assert out == [row for row in rows if row["id"] in set(kept_ids)]
    assert result.stats.steps["deduplicate"].dropped == {"duplicate of an earlier row": len(rows) - len(out)}


def test_a_column_no_step_makes_is_an_error_before_anything_runs() -> None:
    step = get_step("deduplicate", name="dedup", columns=["text", "answer"])
    with pytest.raises(DeduplicateColumnError) as caught:
        Pipeline(step, source=[{"text": "a"}]).validate()
    assert "'dedup'" in str(caught.value) and "'answer'" in str(caught.value) and "text" in str(caught.value)


def test_from_a_pipeline_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the side file's path is relative to where the run is started
    rows = [{"id": 0, "text": "One river."}, {"id": 1, "text": "one  RIVER"}, {"id": 2, "text": "Two rivers."}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    path = tmp_path / "p.yaml"
    path.write_text(
        "source: rows.jsonl\nsteps:\n"
        "  - {name: dedup, type: deduplicate, columns: text, method: exact, duplicates_to: dups.jsonl}\n"
    )
    config = load_pipeline(path)
    result = config.pipeline.run(output=tmp_path / "out", progress=None)
    assert [row["id"] for row in result.rows()] == [0, 2]
    assert result.stats.steps["dedup"].dropped == {"exact duplicate of an earlier row": 1}
    assert json.loads((tmp_path / "dups.jsonl").read_text())["row"] == rows[1]


class SlowFirstLLM(ScriptedAsyncLLM):
    """Answers the same for every prompt, later the earlier the row: upstream rows finish reversed."""

    registry_name: ClassVar[str | None] = None

    async def acomplete(self, input: ChatType, num_generations: int, options: Any) -> GenerateOutput:
        number = int(str(input[-1]["content"]).split()[-1])
        await asyncio.sleep(0.1 * (3 - number))
        return await super().acomplete(input, num_generations, options)


class UnorderedDeduplicate(Deduplicate):
    needs_input_order: ClassVar[bool] = False


@pytest.mark.parametrize(("step_class", "kept"), [(Deduplicate, [0, 3]), (UnorderedDeduplicate, [2, 3])])
def test_rows_finishing_out_of_order_upstream_are_deduplicated_in_source_order(
    tmp_path: Path, step_class: type[Deduplicate], kept: list[int]
) -> None:
    # Rows 0 to 2 get the same answer; row 0's comes last. The step must keep row 0's, as a
    # rerun with any timing would; without asking for input order it keeps whichever came first.
    def reply(chat: ChatType, index: int) -> str:
        number = int(str(chat[-1]["content"]).split()[-1])
        return "The same answer, word for word." if number < 3 else "Another answer."

    llm = SlowFirstLLM(reply=reply)
    answer = get_task("text-generation", name="answer", llm=llm)
    dedup = step_class(name="dedup", columns="generation", method="exact")
    rows = [{"id": i, "instruction": f"question {i}"} for i in range(4)]
    result = Pipeline(answer >> dedup, source=rows).run(output=tmp_path / "out", use_cache=False, progress=None)
    assert sorted(row["id"] for row in result.rows()) == kept
    assert Deduplicate.needs_input_order
