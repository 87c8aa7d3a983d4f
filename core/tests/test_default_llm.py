"""Which LLM a task that names none gets: environment, config file, local default, else a clear error."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

import taskloom
from taskloom import cli
from taskloom.config import ConfigError, config_path, default_llm, default_llm_choice, llm_from_spec, parse_llm_spec
from taskloom.errors import NoDefaultLLMError
from taskloom.llms import LLM
from taskloom.registry import get_task, load_task
from taskloom.testing.scripted import ScriptedAsyncLLM, ScriptedLLM
from taskloom.typing import ChatType, GenerateOutput


@pytest.fixture(autouse=True)
def _without_the_real_local_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about resolution, so the real taskloom-llamacpp (if installed) stays out."""
    monkeypatch.setenv("TASKLOOM_DISABLE_PLUGINS", "llamacpp")


class FakeLocal(LLM):
    """Stands in for taskloom-llamacpp's LLM: registered under the local default's name."""

    registry_name: ClassVar[str | None] = "llamacpp"
    spec_field: ClassVar[str | None] = "model_path"
    model_path: str | None = None

    @property
    def model_name(self) -> str:
        return self.model_path or "bundled"

    def complete(self, inputs: Sequence[ChatType], num_generations: int, options: Any) -> list[GenerateOutput]:
        return [{"generations": ["local"] * num_generations} for _ in inputs]


class LocalPlugin:
    @taskloom.hookimpl
    def register_llms(self, register: Any) -> None:
        register("llamacpp", FakeLocal)


def write_config(text: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_no_default_says_how_to_get_one() -> None:
    with pytest.raises(NoDefaultLLMError) as caught:
        get_task("text-generation")
    message = str(caught.value)
    assert "pip install taskloom-llamacpp" in message
    assert "TASKLOOM_DEFAULT_LLM=openai:gpt-4o-mini" in message
    assert str(config_path()) in message
    assert "scripted" in message  # what is installed


def test_local_default_when_installed(taskloom_plugin: Any) -> None:
    taskloom_plugin(LocalPlugin(), name="llamacpp", package="taskloom-llamacpp")
    task = get_task("text-generation")
    assert isinstance(task.llm, FakeLocal)
    assert "taskloom-llamacpp" in default_llm_choice().source
    row = next(task.process([{"instruction": "hi"}]))[0]
    assert row["generation"] == "local"
    assert row["model_name"] == "bundled"


def test_environment_names_the_default(monkeypatch: pytest.MonkeyPatch, taskloom_plugin: Any) -> None:
    taskloom_plugin(LocalPlugin(), name="llamacpp", package="taskloom-llamacpp")
    monkeypatch.setenv("TASKLOOM_DEFAULT_LLM", "scripted-async:my-model")
    llm = default_llm()
    assert isinstance(llm, ScriptedAsyncLLM)
    assert llm.model == "my-model"
    assert default_llm_choice().source == "$TASKLOOM_DEFAULT_LLM"


def test_spec_value_goes_to_the_class_spec_field(taskloom_plugin: Any) -> None:
    taskloom_plugin(LocalPlugin(), name="llamacpp", package="taskloom-llamacpp")
    assert parse_llm_spec("llamacpp:/models/x.gguf") == {"type": "llamacpp", "model_path": "/models/x.gguf"}
    assert parse_llm_spec("llamacpp") == {"type": "llamacpp"}
    assert llm_from_spec({"type": "scripted", "model": "m"}).model_name == "m"


@pytest.mark.parametrize("spec", ["", "  ", {"model": "x"}, 3])
def test_bad_specs_are_refused(spec: Any) -> None:
    with pytest.raises(ConfigError):
        parse_llm_spec(spec)


def test_config_file_short_and_table_forms() -> None:
    write_config('default_llm = "scripted:from-file"\n')
    assert default_llm().model_name == "from-file"
    write_config('[default_llm]\ntype = "scripted"\nmodel = "tabled"\ngeneration_kwargs = { temperature = 0.5 }\n')
    llm = default_llm()
    assert isinstance(llm, ScriptedLLM)
    assert (llm.model_name, llm.generation_kwargs) == ("tabled", {"temperature": 0.5})
    assert "config.toml" in default_llm_choice().source


def test_environment_overrides_config_file(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config('default_llm = "scripted:from-file"\n')
    monkeypatch.setenv("TASKLOOM_DEFAULT_LLM", "scripted:from-env")
    assert default_llm().model_name == "from-env"


def test_unknown_default_names_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKLOOM_DEFAULT_LLM", "opnai:gpt-4o-mini")
    with pytest.raises(ConfigError, match=r"\$TASKLOOM_DEFAULT_LLM") as caught:
        get_task("text-generation")
    assert "opnai" in str(caught.value)


def test_broken_config_file_says_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config("default_llm = [unclosed\n")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        default_llm()
    assert str(path) in str(caught.value)
    monkeypatch.setenv("TASKLOOM_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        default_llm()


def test_a_given_llm_never_reads_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKLOOM_DEFAULT_LLM", "no-such-llm")
    task = get_task("text-generation", llm=ScriptedLLM(replies=["x"]))
    assert load_task(task.dump()) == task


def test_sync_llm_awaited_from_several_tasks_keeps_the_loop_free() -> None:
    class Slow(ScriptedLLM):
        def complete(self, inputs: Sequence[ChatType], num_generations: int, options: Any) -> list[GenerateOutput]:
            self.threads.add(threading.get_ident())
            time.sleep(0.05)
            return super().complete(inputs, num_generations, options)

    llm = Slow(replies=["a"], generation_kwargs={"temperature": 0.1})
    llm.__dict__["threads"] = set()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    async def main() -> list[list[GenerateOutput]]:
        tick = asyncio.create_task(ticker())
        try:
            return await asyncio.gather(*(llm.agenerate_batch([[{"role": "user", "content": "q"}]]) for _ in range(3)))
        finally:
            tick.cancel()

    results = asyncio.run(main())
    assert [r[0]["generations"] for r in results] == [["a"]] * 3
    assert ticks >= 5, "the event loop was blocked while the sync LLM generated"
    assert threading.get_ident() not in llm.__dict__["threads"]
    assert all(call["kwargs"] == {"temperature": 0.1} for call in llm.calls)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_config_reports_default_and_source(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["config", "--json"], capsys)
    info = json.loads(out)
    assert code == 0
    assert info["default_llm"] is None
    assert "pip install taskloom-llamacpp" in info["default_llm_error"]
    monkeypatch.setenv("TASKLOOM_DEFAULT_LLM", "scripted")
    code, out, _ = run_cli(["config"], capsys)
    assert "Default LLM: 'scripted', from $TASKLOOM_DEFAULT_LLM" in out
    code, out, _ = run_cli(["llms"], capsys)
    assert "Default LLM: 'scripted' from $TASKLOOM_DEFAULT_LLM" in out


def test_cli_generate_uses_the_default(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TASKLOOM_DEFAULT_LLM", "scripted")
    code, out, err = run_cli(["generate", "What is 2+2?", "Name a colour.", "-n", "2"], capsys)
    assert code == 0
    assert "> What is 2+2?" in out
    assert "> Name a colour." in out
    assert "model: scripted" in err


def test_cli_generate_llm_flag_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["generate", "--llm", "scripted-async:m2", "--temperature", "0.3", "--json", "hi"], capsys)
    row = json.loads(out)
    assert code == 0
    assert row["model_name"] == "m2"
    assert row["instruction"] == "hi"
    assert len(row["generation"]) == 1


def test_cli_generate_without_any_llm_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["generate", "hi"], capsys)
    assert code == 2
    assert "pip install taskloom-llamacpp" in err
