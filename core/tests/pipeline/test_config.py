"""Pipeline files and `taskloom run/show/validate`: every bad input is a clear error before any LLM call."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from taskloom import cli
from taskloom.pipeline.config import PipelineConfigError, apply_override, load_pipeline
from taskloom.pipeline.graph import PipelineError

GOOD = """
name: demo
source: {type: jsonl, path: rows.jsonl}
steps:
  - name: answer
    type: text-generation
    llm: {type: scripted-async, replies: ["Madrid."]}
  - name: judge
    type: structured-generation
    llm: {type: scripted-async, replies: ['{"score": 4}']}
    template: "Rate {{ generation }} for {{ instruction }}"
    output_schema: {type: object, properties: {score: {type: integer}}, required: [score]}
parameters:
  answer: {num_generations: 1}
"""


def write(tmp_path: Path, text: str, rows: list[dict[str, str]] | None = None) -> Path:
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (rows or [{"instruction": "q"}])))
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_good_file_runs_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD, [{"instruction": "q1"}, {"instruction": "q2"}])
    assert cli.main(["validate", str(path)]) == 0
    assert cli.main(["run", str(path), "--output", str(tmp_path / "out"), "--progress", "none"]) == 0
    out = capsys.readouterr().out
    assert "judge: " in out and "answer" in out
    rows = [json.loads(line) for line in (tmp_path / "out" / "judge.jsonl").read_text().splitlines()]
    assert [(r["instruction"], r["generation"], r["score"]) for r in rows] == [
        ("q1", "Madrid.", 4),
        ("q2", "Madrid.", 4),
    ]


def test_show_lists_steps_columns_and_parameters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["show", str(write(tmp_path, GOOD.replace("num_generations: 1", "num_generations: 3")))]) == 0
    out = capsys.readouterr().out
    assert "num_generations = 3" in out  # the value the file sets, not the class default
    assert "judge [structured-generation] after answer" in out
    assert "outputs: score, model_name" in out
    assert "generation_kwargs" in out
    assert cli.main(["show", "--json", str(write(tmp_path, GOOD))]) == 0
    described = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in described["steps"]] == ["answer", "judge"]


def test_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD)
    assert cli.main(["run", str(path), "--dry-run", "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert '"content": "Rate Madrid. for q"' in out
    assert not (tmp_path / "out").exists()


def test_yaml_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nsteps:\n  - type: [unclosed\n")
    with pytest.raises(PipelineConfigError, match=r"pipeline\.yaml:4:1: not valid YAML"):
        load_pipeline(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            GOOD.replace("type: text-generation", "type: text-generaton"),
            r"(?s)steps\[0\] \('answer'\).*text-generation",
        ),
        (GOOD.replace('type: scripted-async, replies: ["Madrid."]', "type: nope"), r"'answer'.*llm.*nope"),
        (GOOD.replace("rows.jsonl", "missing.jsonl"), "missing.jsonl"),
        (GOOD.replace("{{ instruction }}", "{{ question }}"), "needs the column 'question'"),
        (GOOD + "\nbogus: 1\n", "unknown top-level"),
        ("steps: []\n", "non-empty list"),
    ],
)
def test_bad_files_fail_before_any_llm_call(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)

    def load_and_check() -> None:
        config = load_pipeline(path)
        config.pipeline.validate(config.parameters)

    with pytest.raises((PipelineConfigError, PipelineError, Exception), match=message):
        load_and_check()


def test_empty_source_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD)
    (tmp_path / "rows.jsonl").write_text("")
    assert cli.main(["validate", str(path)]) == 2
    assert "no rows" in capsys.readouterr().err


def test_set_overrides_are_typed_and_nested() -> None:
    parameters: dict[str, dict[str, object]] = {}
    apply_override(parameters, "answer.llm.generation_kwargs.temperature=0.2")
    apply_override(parameters, "answer.num_generations=3")
    assert parameters == {"answer": {"llm": {"generation_kwargs": {"temperature": 0.2}}, "num_generations": 3}}
    with pytest.raises(PipelineConfigError, match=r"step\.parameter=value"):
        apply_override(parameters, "temperature")


def test_set_on_the_command_line_reaches_the_step(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    config = load_pipeline(path, ["answer.num_generations=2"])
    config.pipeline.run(config.parameters, output=tmp_path / "out")
    rows = (tmp_path / "out" / "judge.jsonl").read_text().splitlines()
    assert len(rows) == 2


def test_output_folder_of_another_pipeline_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD)
    out = str(tmp_path / "out")
    assert cli.main(["run", str(path), "--output", out, "--progress", "none"]) == 0
    other = write(tmp_path, GOOD.replace("name: demo", "name: other"))
    assert cli.main(["run", str(other), "--output", out, "--progress", "none"]) == 2
    assert "demo" in capsys.readouterr().err


def test_structured_generation_asks_for_its_schema_without_changing_a_shared_llm(tmp_path: Path) -> None:
    from typing import Any, ClassVar

    from taskloom import Pipeline, get_task
    from taskloom.llms import AsyncLLM
    from taskloom.typing import ChatType, GenerateOutput

    class SchemaLLM(AsyncLLM):
        registry_name: ClassVar[str | None] = None
        seen: list[Any] = []

        @property
        def model_name(self) -> str:
            return "schema"

        async def acomplete(self, input: ChatType, num_generations: int, options: Any) -> GenerateOutput:
            self.seen.append(options.structured_output)
            return {"generations": ['{"score": 3}'] * num_generations}

    shared = SchemaLLM()
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}}
    judge = get_task("structured-generation", llm=shared, template="{{ instruction }}", output_schema=schema)
    other = get_task("text-generation", llm=shared)
    assert shared.generation_kwargs == {}, "the shared LLM is not changed"
    assert judge.llm_kwargs() == {"structured_output": schema}
    assert other.llm_kwargs() == {}
    rows = Pipeline(judge, source=[{"instruction": "q"}], name="s").run(output=tmp_path / "o").rows()
    assert next(rows)["score"] == 3
    assert next(iter(judge.process([{"instruction": "q"}])))[0]["score"] == 3
    assert shared.seen == [schema, schema], "both the pipeline and process() send the schema"
