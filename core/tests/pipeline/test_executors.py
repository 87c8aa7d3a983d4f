"""Executors are plugins: the local one is registered like any other, and a plugin's is picked by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from taskloom import Pipeline, get_llm, get_task
from taskloom.cli import main
from taskloom.errors import KNOWN_PACKAGES, UnknownNameError
from taskloom.hookspecs import hookimpl
from taskloom.pipeline.executors import LocalExecutor, PipelineExecutor, RunRequest
from taskloom.pipeline.graph import PipelineError
from taskloom.pipeline.pipeline import RunResult
from taskloom.registry import get_executor, get_registry, list_executors


def scripted_pipeline() -> Pipeline:
    task = get_task("text-generation", name="answer", llm=get_llm("scripted", replies=["one", "two", "three"]))
    return Pipeline(task, source=[{"instruction": f"q{i}"} for i in range(3)], name="three")


class Recording(PipelineExecutor):
    """Runs locally, noting what it was handed: the request Pipeline.run checked."""

    registry_name: ClassVar[str | None] = "recording"
    handles_budget: ClassVar[bool] = False
    seen: ClassVar[list[RunRequest]] = []

    label: str = "x"

    def run(self, pipeline: Pipeline, request: RunRequest) -> RunResult:
        type(self).seen.append(request)
        return LocalExecutor().run(pipeline, request)


class RecordingPlugin:
    @staticmethod
    @hookimpl
    def register_executors(register: Any) -> None:
        register(Recording)


@pytest.fixture
def recording() -> Any:
    registry = get_registry()
    registry.add_plugin(RecordingPlugin(), "recording-plugin")
    Recording.seen.clear()
    try:
        yield Recording
    finally:
        registry.remove_plugin("recording-plugin")


def test_the_local_executor_is_registered_through_the_hook_and_is_the_default(tmp_path: Path) -> None:
    assert list_executors()["local"] is LocalExecutor
    assert get_registry().resolve("executor", "local").plugin == "taskloom"
    by_default = scripted_pipeline().run(output=tmp_path / "a", progress=None)
    by_name = scripted_pipeline().run(output=tmp_path / "b", progress=None, executor="local")
    assert [r["generation"] for r in by_default.rows()] == [r["generation"] for r in by_name.rows()]
    assert [r["generation"] for r in by_default.rows()] == ["one", "two", "three"]


def test_a_plugin_executor_is_picked_by_name_and_handed_a_checked_request(recording: Any, tmp_path: Path) -> None:
    result = scripted_pipeline().run(output=tmp_path / "run", progress=None, executor="recording")
    assert result.stats.done == 3
    (request,) = recording.seen
    assert request.output == tmp_path / "run"
    assert request.source.first_row() == {"instruction": "q0"}
    built = get_executor("recording", label="y")
    scripted_pipeline().run(output=tmp_path / "again", progress=None, executor=built)
    assert len(recording.seen) == 2


def test_columns_are_checked_before_any_executor_starts(recording: Any, tmp_path: Path) -> None:
    wrong = scripted_pipeline()
    with pytest.raises(Exception, match="instruction"):
        wrong.run(source=[{"question": "no instruction column"}], output=tmp_path / "run", executor="recording")
    assert recording.seen == []


def test_an_executor_that_cannot_keep_a_budget_refuses_one_before_it_starts(recording: Any, tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="'recording' executor cannot keep budget_usd or max_requests"):
        scripted_pipeline().run(output=tmp_path / "run", max_requests=2, executor="recording")
    assert recording.seen == []


def test_the_cli_runs_on_a_named_executor_and_refuses_an_address_it_cannot_use(
    recording: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "name: cli\nsource: {type: rows, rows: [{instruction: hi}]}\n"
        "steps:\n  - {name: answer, type: text-generation, llm: {type: scripted, replies: [hello]}}\n",
        encoding="utf-8",
    )
    out = str(tmp_path / "out")
    assert main(["run", str(config), "--output", out, "--progress", "none", "--executor", "recording"]) == 0
    assert len(recording.seen) == 1
    code = main(["run", str(config), "--output", out, "--progress", "none", "--address", "127.0.0.1:6379"])
    assert code == 2
    assert "--address is for an executor that connects to a cluster" in capsys.readouterr().err


def test_an_unknown_executor_says_which_package_brings_it() -> None:
    error = UnknownNameError("executor", "ray", ["local"])
    assert "'ray' comes with the taskloom-ray package: pip install taskloom-ray" in str(error)
    assert "pip install" not in str(UnknownNameError("executor", "dask", ["local"]))


def test_every_known_package_hint_names_the_package_that_registers_the_name() -> None:
    registry = get_registry()
    registry.scan()
    for name, package in KNOWN_PACKAGES.items():
        found = [
            reg
            for kind in ("llm", "task", "step", "source", "sink", "executor", "command")
            for reg in registry.registrations(kind)  # type: ignore[arg-type]
            if reg.name == name
        ]
        if not found:  # that package is not installed here (taskloom-ray in a core-only check)
            continue
        assert {reg.package for reg in found} == {package}, name
