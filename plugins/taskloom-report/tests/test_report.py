"""The run report, built from real runs of a small scripted pipeline (a generator and two judges)."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from taskloom_report import Report, build_report
from taskloom_report.caches import read_caches
from taskloom_report.report import step_outputs
from taskloom_report.scan import METADATA, normalise, row_status, worst

from taskloom import Pipeline, get_task
from taskloom.cli import main
from taskloom.errors import GenerationError
from taskloom.html_table import Rows
from taskloom.pipeline.pipeline import RunResult
from taskloom.testing.scripted import ScriptedLLM

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _answer(chat: Any, index: int) -> str | GenerationError:
    text = str(chat)
    if "Question 3?" in text or "Question 7?" in text:
        number = 3 if "Question 3?" in text else 7
        return GenerationError(f"HTTP 500 from the server for request id 1234{number}")
    return f"answer {index} " * (3 + len(text) % 5) + "see https://example.com/x"


def _pipeline(rows: int) -> Pipeline:
    answer = get_task(
        "text-generation",
        name="answer",
        llm=ScriptedLLM(reply=_answer),
        num_generations=2,
        group_generations=True,
        output_mappings={"generation": "generations"},
    )
    rate = get_task(
        "ultrafeedback", name="rate", llm=ScriptedLLM(replies=["Rating: 4\nRating: 2", "[5, 3]", "no ratings", None])
    )
    compare = get_task(
        "pairwise-judge",
        name="compare",
        llm=ScriptedLLM(replies=['{"rationale": "a", "verdict": "A"}', '{"rationale": "b", "verdict": "B"}']),
        both_orders=True,
    )
    source = [{"instruction": f"Question {i}?"} for i in range(rows)]
    return Pipeline([answer, rate, compare], source=source, name="reported")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    return _pipeline(12).run(output=tmp_path_factory.mktemp("run") / "out", progress=None)


@pytest.fixture(scope="module")
def report(run: RunResult) -> Report:
    return build_report(run.output_dir)


def test_the_page_has_every_section(report: Report) -> None:
    page = report.html
    for needle in ('id="pipeline"', 'id="judges"', 'id="lengths"', 'id="rows-search"', 'id="rows-status"'):
        assert needle in page
    for option in ("all", "ok", "unreadable", "failed"):
        assert f'<option value="{option}">' in page
    assert 'id="rows-table"' in page and 'id="row-detail"' in page and 'id="failures"' in page
    # graph, steps over time, cache arrivals, two judges, one generation step
    assert page.count('class="plotly-graph-div"') == 6
    assert 'id="runs"' in page and "When each step was busy" in page
    assert "order flips" in page and "longer answer wins" in page and "unreadable" in page
    assert report.rows == 12 and "All 12 rows." in page


def test_no_external_reference_at_all(report: Report) -> None:
    page = report.html
    assert not re.search(r"https?://", page)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page)
    assert "url(http" not in page
    assert page.count("<script") == page.count("</script>")


def _record(run: RunResult) -> dict[str, Any]:
    runs: list[dict[str, Any]] = json.loads((run.output_dir / "run.json").read_text(encoding="utf-8"))["runs"]
    return runs[-1]


def test_rows_have_statuses_and_failures_are_grouped(run: RunResult, report: Report) -> None:
    outputs = step_outputs(_record(run))
    assert outputs == {
        "answer": ["generation"],
        "rate": ["ratings", "rationales"],
        "compare": ["verdict", "rationale", "orders_agree"],
    }
    statuses = [row_status(row, outputs) for row in run.rows()]
    assert statuses.count("failed") == 2 and "unreadable" in statuses and "ok" in statuses
    # unreadable exactly where a judge kept a reply and could read nothing from it
    expected = [
        any(
            row[METADATA].get(f"raw_output_{task}") is not None and all(v is None for v in _values(row, columns))
            for task, columns in (
                ("rate", ["ratings", "rationales"]),
                ("compare", ["verdict", "rationale", "orders_agree"]),
            )
        )
        for row in run.rows()
    ]
    assert [s == "unreadable" for s in statuses] == [
        e and s != "failed" for e, s in zip(expected, statuses, strict=True)
    ]
    shown = re.findall(r'data-status="(\w+)"', report.html)
    assert shown == statuses  # the page's table uses the same rule
    # and each row carries its steps' own statuses, whose worst is the row's
    per_step = [json.loads(html.unescape(s)) for s in re.findall(r'data-steps="([^"]*)"', report.html)]
    assert [worst(s) for s in per_step] == statuses
    assert all(set(s) <= {"answer", "rate", "compare"} for s in per_step)
    failed = [any(_values(r[METADATA], ["error_answer"])) for r in run.rows()]
    assert [s.get("answer") == "failed" for s in per_step] == failed and any(failed)
    assert 'id="rows-step"' in report.html and 'data-step="rate"' in report.html
    failures = report.html.split('id="failures"')[1]
    # two failed requests whose ids differ are one cause
    assert "HTTP N from the server for request id N" in failures
    assert re.search(r"<tr class=\"failure\"><td>2</td><td>GenerationError: HTTP N", failures)
    assert "example row" in failures


def _values(row: dict[str, Any], columns: list[str]) -> list[Any]:
    flat: list[Any] = []
    for column in columns:
        value = row.get(column)
        flat.extend(value if isinstance(value, list) else [value])
    return flat


def test_status_reads_each_tasks_own_columns() -> None:
    """With the output columns known, a sparse row is not unreadable; an unparsed generation is."""
    meta = {METADATA: {"raw_output_answer": "text"}}
    sparse = {"instruction": "q", "context": None, "generation": "text", **meta}
    assert row_status(sparse, {"answer": ["generation"]}) == "ok"
    assert row_status(sparse) == "unreadable"  # without them, only a guess
    unparsed = {"instruction": "q", "generation": None, **meta}
    assert row_status(unparsed, {"answer": ["generation"]}) == "unreadable"
    grouped = {"generation": ["a", None], METADATA: {"raw_output_answer": ["a", "garbage"]}}
    assert row_status(grouped, {"answer": ["generation"]}) == "unreadable"
    refused = {"generation": ["a", None], METADATA: {"raw_output_answer": ["a", None]}}
    assert row_status(refused, {"answer": ["generation"]}) == "ok"  # no text to read is a refusal, not unreadable
    rated = {"ratings": [4, None], "rationales": [None, None], METADATA: {"raw_output_rate": "Rating: 4"}}
    assert row_status(rated, {"rate": ["ratings", "rationales"]}) == "ok"
    failed = {"generation": None, METADATA: {"raw_output_answer": None, "error_answer": "boom"}}
    assert row_status(failed, {"answer": ["generation"]}) == "failed"


def test_a_folder_without_recorded_columns_says_the_status_is_a_guess(run: RunResult, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(run.output_dir, old)
    data = json.loads((old / "run.json").read_text(encoding="utf-8"))
    for record in data["runs"]:
        for info in record["steps"].values():
            info.pop("outputs", None)
    (old / "run.json").write_text(json.dumps(data), encoding="utf-8")
    assert "is a guess" in build_report(old).html
    assert "is a guess" not in build_report(run.output_dir).html


def test_the_cache_tells_what_every_run_of_the_folder_paid_for(tmp_path: Path) -> None:
    llm = ScriptedLLM(replies=["one two three"])
    pipeline = Pipeline(
        get_task("text-generation", name="answer", llm=llm),
        source=[{"instruction": f"q{i}"} for i in range(7)],
        name="cached",
    )
    paid = _record(pipeline.run(output=tmp_path / "out", progress=None))
    again = _record(pipeline.run(output=tmp_path / "out", progress=None))
    assert paid["requests"] == 7 and again["requests"] == 0 and paid["output_tokens"] > 0
    caches = read_caches(tmp_path / "out")
    assert (caches.files, caches.generations, caches.empty) == (1, 7, 0)
    assert caches.output_tokens == paid["output_tokens"] and caches.input_tokens == paid["input_tokens"]
    assert sum(caches.arrivals.values()) == 7
    page = build_report(tmp_path / "out").html
    runs = page.split('id="runs-table"')[1].split("</table>")[0]
    assert runs.count("<tr><td>") == 2
    # the second run: 7 rows, 0 requests, 7 cache hits
    assert re.search(r"<tr><td>2</td><td>[^<]*</td><td>7</td><td>0</td>\s*<td>7</td>", runs)
    assert "hold 7 generations" in page or "holds 7 generations" in page

    # a Ray run's layout: a cache per shard; an unreadable file is named, the rest still counted
    ray_like = tmp_path / "ray"
    for shard in ("00000", "00001"):
        (ray_like / "shards" / shard).mkdir(parents=True)
        shutil.copy(tmp_path / "out" / "cache.sqlite", ray_like / "shards" / shard / "cache.sqlite")
    (ray_like / "phases" / "00-to-answer" / "shards" / "00000").mkdir(parents=True)
    (ray_like / "phases" / "00-to-answer" / "shards" / "00000" / "cache.sqlite").write_text("not a database")
    summed = read_caches(ray_like)
    assert (summed.files, summed.generations) == (2, 14)
    assert len(summed.unreadable) == 1 and "00-to-answer" in summed.unreadable[0]


def test_a_parquet_only_run_is_read_too(tmp_path: Path) -> None:
    from taskloom.registry import get_sink

    parquet = _pipeline(12)
    parquet.sinks = [get_sink("parquet")]
    result = parquet.run(output=tmp_path / "out", progress=None)
    assert list(result.output_dir.glob("*.jsonl")) == [] and list(result.output_dir.glob("*.parquet"))
    on_parquet, on_jsonl = build_report(result.output_dir), _pipeline(12).run(output=tmp_path / "j", progress=None)
    expected = [row_status(row, step_outputs(_record(on_jsonl))) for row in on_jsonl.rows()]
    assert on_parquet.rows == 12 and re.findall(r'data-status="(\w+)"', on_parquet.html) == expected


def test_dollars_say_local_priced_or_unpriced() -> None:
    from taskloom_report.report import dollars

    local = {"requests": 4, "cost_usd": 0.0, "local": True}
    paid = {"requests": 4, "cost_usd": 0.01234, "local": False}
    unpriced = {"requests": 4, "cost_usd": None, "unpriced_requests": 4, "local": False}
    assert [dollars(s) for s in (local, paid, unpriced)] == ["$0 (local)", "$0.0123", "no price"]
    assert dollars({"rows_in": 3}) == ""  # a step that is not a task costs nothing to say
    assert dollars({"requests": 8, "cost_usd": 0.0, "steps": {"a": local, "b": dict(local)}}) == "$0 (local)"
    assert dollars({"requests": 8, "cost_usd": 0.0123, "steps": {"a": local, "b": paid}}) == "$0.0123"


def test_normalise_keeps_the_words() -> None:
    assert normalise("timeout after 30.5 s (id 9f8e7d6c5b4a)") == "timeout after N s (id N)"


def test_a_big_run_is_sampled_and_says_so(tmp_path: Path) -> None:
    result = _pipeline(60).run(output=tmp_path / "out", progress=None)
    report = build_report(result.output_dir, sample=10)
    assert report.rows == 60 and report.sampled == 10
    assert "A sample of 10 of 60 rows" in report.html
    assert report.html.count("<tr data-row=") == 10
    assert build_report(result.output_dir, sample=10).html.count("data-row=") == 10  # same sample each time


def test_the_cli_command_writes_the_page(run: RunResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "page.html"
    assert main(["report", str(run.output_dir), "-o", str(target)]) == 0
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert str(target) in capsys.readouterr().out


def test_not_a_run_folder(tmp_path: Path) -> None:
    assert main(["report", str(tmp_path)]) == 2


def test_run_with_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipeline = tmp_path / "p.yaml"
    shutil.copy(EXAMPLES / "quickstart-instructions.jsonl", tmp_path / "in.jsonl")
    pipeline.write_text(
        "name: tiny\nsource: {type: jsonl, path: in.jsonl}\n"
        "steps:\n  - {name: answer, type: text-generation, llm: {type: scripted, replies: [one two three]}}\n"
        f"output: {tmp_path / 'out'}\n",
        encoding="utf-8",
    )
    assert main(["run", str(pipeline), "--progress", "none", "--report"]) == 0
    out = capsys.readouterr().out
    page = tmp_path / "out" / "report.html"
    assert f"report: {page}" in out and page.is_file()


def test_notebook_displays(run: RunResult, report: Report) -> None:
    shown = report._repr_html_()
    assert shown.startswith("<iframe srcdoc=") and "<script" not in shown  # escaped into the attribute
    assert isinstance(run.report(), Report)
    table = run._repr_html_()
    assert "<table" in table and "Question 0?" in table and "plotly" not in table
    saved = report.save(Path(run.output_dir) / "saved" / "r.html")
    assert saved.read_text(encoding="utf-8") == report.html


def test_task_output_rows_display_and_compare_as_lists() -> None:
    task = get_task("text-generation", llm=ScriptedLLM(replies=["<b>bold</b> " + "x" * 500]))
    task.load()
    batch = next(task.process([{"instruction": "hi"}]))
    assert isinstance(batch, Rows) and isinstance(batch, list)
    assert batch == json.loads(json.dumps(batch))  # equal to the plain list it is
    shown = batch._repr_html_()
    assert "&lt;b&gt;bold" in shown and "x" * 500 not in shown
