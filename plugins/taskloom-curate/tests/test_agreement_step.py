"""The ``agreement`` step: a judge's agreement with people, measured as rows pass, in the stats and the card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from taskloom_curate.agreement import AgreementColumnError

from taskloom import Pipeline, get_step
from taskloom.agreement import measure_agreement
from taskloom.pipeline.config import load_pipeline

pytest.importorskip("scipy", reason="agreement needs taskloom[stats]")

VERDICTS = [("A", "A"), ("B", "B"), ("A", "B"), ("B", "B"), ("A", None), ("A", "A"), ("B", "A"), ("A", "A")]


def rows() -> list[dict[str, object]]:
    return [{"id": i, "verdict": v, "human": h} for i, (v, h) in enumerate(VERDICTS)]


def test_rows_pass_unchanged_and_the_measure_matches_the_cli_one(tmp_path: Path) -> None:
    step = get_step("agreement", judge="verdict", human="human")
    result = Pipeline(step, source=rows()).run(output=tmp_path / "run", progress=None)
    assert list(result.rows()) == rows()
    measured = result.stats.steps["agreement"].measured
    expected = measure_agreement([v for v, _ in VERDICTS], [h for _, h in VERDICTS])
    assert measured == {
        "accuracy": expected["accuracy"],
        "cohen_kappa": expected["cohen_kappa"],
        "labelled_rows": 7,
        "unlabelled_rows": 1,
        "compared_as": "labels",
    }
    assert measured["accuracy"]["value"] == pytest.approx(5 / 7, abs=1e-4)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["runs"][-1]["steps"]["agreement"]["measured"] == measured
    card = (tmp_path / "run" / "README.md").read_text()
    assert "## Measured over the dataset" in card
    assert "**agreement**: accuracy 0.714 [" in card


def test_scores_get_rank_correlations_and_the_summary_shows_them(tmp_path: Path) -> None:
    from taskloom.pipeline.progress import summary_table

    scored = [{"rating": r, "human": h} for r, h in [(1, 1), (2, 2), (3, 3), (4, 5), (5, 4), (2, 1)]]
    step = get_step("agreement", judge="rating", human="human")
    result = Pipeline(step, source=scored).run(output=tmp_path / "run", progress=None)
    measured = result.stats.steps["agreement"].measured
    assert measured is not None
    assert set(measured) == {"spearman", "kendall", "labelled_rows", "unlabelled_rows", "compared_as"}
    assert measured["spearman"]["value"] > 0.8
    assert "agreement measured: spearman 0." in summary_table(result.stats)


def test_too_few_labelled_rows_say_so_instead_of_a_number(tmp_path: Path) -> None:
    few = [{"verdict": "A", "human": "A"}, {"verdict": "B", "human": None}]
    result = Pipeline(get_step("agreement", judge="verdict", human="human"), source=few).run(
        output=tmp_path / "run", progress=None
    )
    assert result.stats.steps["agreement"].measured == {
        "labelled_rows": 1,
        "not_measured": "fewer than 3 rows with both columns",
    }


def test_a_column_no_step_makes_is_refused_before_the_run() -> None:
    step = get_step("agreement", name="agree", judge="verdict", human="label")
    with pytest.raises(
        AgreementColumnError, match=r"Step 'agree': it compares the columns 'label'.*Their columns: verdict"
    ):
        Pipeline(step, source=[{"verdict": "A"}]).validate()


def test_it_reads_from_a_pipeline_file(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows()))
    (tmp_path / "p.yaml").write_text(
        "name: p\nsource: {type: jsonl, path: in.jsonl}\n"
        "steps:\n  - {name: agree, type: agreement, judge: verdict, human: human, bootstrap: 200}\n"
    )
    result = load_pipeline(tmp_path / "p.yaml").pipeline.run(output=tmp_path / "run", progress=None)
    assert result.stats.steps["agree"].measured["labelled_rows"] == 7
