"""The names users import from ``taskloom``, resolved lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

import taskloom
from taskloom import TextGeneration
from taskloom.testing import ScriptedLLM
from taskloom.testing.conformance import TaskConformance

PUBLIC = ["Step", "Task", "LLM", "AsyncLLM", "get_task", "get_llm", "list_tasks", "list_llms", "load_task", "hookimpl"]


def test_public_names_resolve() -> None:
    for name in PUBLIC:
        assert getattr(taskloom, name) is not None
    assert set(taskloom.__all__) == {*taskloom._LAZY, "__version__"}
    assert sorted(dir(taskloom)) == sorted(taskloom.__all__)
    with pytest.raises(AttributeError):
        taskloom.nope  # noqa: B018


def printed(code: str) -> str:
    """What ``code`` prints in a fresh interpreter (so imports are measured from nothing)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_import_loads_no_plugin_and_no_heavy_module() -> None:
    code = (
        "import sys, taskloom; print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'pydantic', 'pluggy', 'jinja2', 'openai', 'anthropic', 'llama_cpp'} or m.startswith('taskloom_')))"
    )
    assert printed(code) == "[]"


def test_resolving_a_name_leaves_the_heavy_helpers_unimported() -> None:
    """What a run does before its first request stays light: no packaging, SDKs or Arrow."""
    code = (
        "import sys, taskloom; taskloom.get_task('text-generation', llm=taskloom.get_llm('scripted')); "
        "taskloom.list_llms(); print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'packaging', 'openai', 'anthropic', 'llama_cpp', 'pyarrow', 'datasets', 'jinja2', 'aiohttp'}))"
    )
    assert printed(code) == "[]"


def test_the_plugin_surface_is_cheap_and_complete() -> None:
    """``taskloom.plugin`` imports nothing until a name is used, and every name it lists resolves."""
    code = (
        "import sys, taskloom.plugin as p; print(sorted(m for m in sys.modules if m.startswith('taskloom.') "
        "and m not in ('taskloom._lazy', 'taskloom._version', 'taskloom.plugin')))"
    )
    assert printed(code) == "[]"
    import taskloom.plugin

    for name in taskloom.plugin.__all__:
        assert getattr(taskloom.plugin, name) is not None, name


def test_plugins_import_core_only_through_its_public_surface() -> None:
    """A plugin's sources use ``taskloom`` / ``taskloom.plugin``, so core's modules can move."""
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    sources = [*repo.glob("plugins/*/src/**/*.py"), *repo.glob("examples/*/src/**/*.py"), *repo.glob("examples/*/*.py")]
    assert sources
    private = re.compile(r"^\s*(?:from|import) taskloom\.(?!plugin\b)[\w.]+", re.M)
    offenders = {str(p.relative_to(repo)): private.findall(p.read_text()) for p in sources}
    assert not {path: found for path, found in offenders.items() if found}


class TestTextGenerationConformance(TaskConformance):
    rows = [{"instruction": "What is 2+2?"}, {"instruction": "Name a colour.", "system_prompt": "Be brief."}]

    @pytest.fixture
    def task(self) -> TextGeneration:
        return TextGeneration(llm=ScriptedLLM())


class TestChatGenerationConformance(TaskConformance):
    rows = [
        {"messages": [{"role": "user", "content": "Hi"}]},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "Yo"}]},
    ]

    @pytest.fixture
    def task(self) -> taskloom.Task:
        return taskloom.get_task("chat-generation", llm=ScriptedLLM())
