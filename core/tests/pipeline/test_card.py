"""The dataset card every run folder gets: a header the Hub reads, a body a person reads."""

from __future__ import annotations

from pathlib import Path

import yaml

from taskloom import Pipeline, get_task
from taskloom.pipeline.card import CARD_FILENAME, size_category
from taskloom.pipeline.config import load_pipeline
from taskloom.testing.scripted import ScriptedLLM


def header_and_body(path: Path) -> tuple[dict, str]:  # type: ignore[type-arg]
    text = path.read_text()
    assert text.startswith("---\n")
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def test_every_run_writes_a_card_with_configs_counts_tokens_and_prompts(tmp_path: Path) -> None:
    task = get_task("text-generation", name="answer", llm=ScriptedLLM(replies=["an answer"]), system_prompt="Be brief.")
    rows = [{"instruction": f"Q{i}?"} for i in range(3)]
    pipeline = Pipeline(task, source=rows, name="answers", card={"license": "apache-2.0", "title": "Short answers"})
    pipeline.run(output=tmp_path / "out", progress=None)
    header, body = header_and_body(tmp_path / "out" / CARD_FILENAME)
    assert header["license"] == "apache-2.0" and header["size_categories"] == ["n<1K"]
    assert header["configs"] == [
        {"config_name": "answer", "data_files": [{"split": "train", "path": "answer.jsonl"}], "default": True}
    ]
    assert "taskloom" in header["tags"]
    assert body.lstrip().startswith("# Short answers")
    assert "| answer | text-generation | scripted | 3 | 3 | 0 | 0 |" in body
    assert "Be brief." in body  # the prompt it was made with


def test_a_pipeline_file_gives_the_license_and_the_command_that_reproduces_it(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"instruction": "hi"}\n')
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: filed\nsource: rows.jsonl\nlicense: cc-by-4.0\n"
        "steps: [{type: text-generation, llm: scripted}]\nsinks: [jsonl, parquet]\n"
    )
    config = load_pipeline(path)
    config.pipeline.run(output=tmp_path / "out", progress=None)
    header, body = header_and_body(tmp_path / "out" / CARD_FILENAME)
    assert header["license"] == "cc-by-4.0"
    assert header["configs"][0]["data_files"][0]["path"] == "text-generation.parquet"
    assert f"taskloom run {path}" in body


def test_size_categories() -> None:
    assert [size_category(n) for n in (0, 999, 1000, 50_000, 200_000, 5_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M",
    ]  # fmt: skip
