"""Plugin loading through real entry points: lazy, isolated, conflict-checked, filterable."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

import taskloom
from taskloom import PluginConflictError, PluginError, UnknownNameError, get_llm, get_task
from taskloom.cli import main
from taskloom.registry import get_registry, list_llms, list_plugins, list_tasks
from taskloom.testing import ScriptedLLM

LLM_PLUGIN = """
import taskloom
from taskloom.testing import ScriptedLLM

class {cls}(ScriptedLLM):
    '''{doc}'''

@taskloom.hookimpl
def register_llms(register):
    register("{name}", {cls})
"""

TASK_PLUGIN = """
import taskloom
from taskloom import TextGeneration

class {cls}(TextGeneration):
    '''{doc}'''

@taskloom.hookimpl
def register_tasks(register):
    register("{name}", {cls})
"""


def llm_plugin(name: str, cls: str = "PluginLLM", doc: str = "An LLM from a plugin.") -> str:
    return LLM_PLUGIN.format(name=name, cls=cls, doc=doc)


def task_plugin(name: str, cls: str = "PluginTask", doc: str = "A task from a plugin.") -> str:
    return TASK_PLUGIN.format(name=name, cls=cls, doc=doc)


def test_plugin_llm_and_task_resolve_by_name(site: Any) -> None:
    site.install("acme-llm", {"acme": "acme_llm"}, {"acme_llm": llm_plugin("acme")})
    site.install("acme-tasks", {"acme-tasks": "acme_tasks"}, {"acme_tasks": task_plugin("shout")})
    llm = get_llm("acme", replies=["hi"])
    task = get_task("shout", llm=llm)
    assert task.name == "shout"
    task.load()
    assert next(task.process([{"instruction": "x"}]))[0]["distilabel_metadata"]["raw_output_shout"] == "hi"


def test_lookup_loads_only_the_entry_point_of_that_name(site: Any) -> None:
    site.install("acme-llm", {"acme": "acme_llm"}, {"acme_llm": llm_plugin("acme")})
    site.install("other", {"other": "other_plugin"}, {"other_plugin": llm_plugin("other")})
    assert "acme_llm" not in sys.modules  # nothing is imported before a lookup
    get_llm("acme")
    assert "acme_llm" in sys.modules
    assert "other_plugin" not in sys.modules
    get_task("text-generation", llm=ScriptedLLM())  # built-ins need no plugin either
    assert "other_plugin" not in sys.modules
    assert "other" in list_llms()  # listing loads everything
    assert "other_plugin" in sys.modules


def test_broken_plugin_is_recorded_and_the_others_keep_working(site: Any, caplog) -> None:
    site.install("broken-pkg", {"broken": "broken_plugin"}, {"broken_plugin": "import not_a_module_xyz\n"})
    site.install("acme-llm", {"acme": "acme_llm"}, {"acme_llm": llm_plugin("acme")})
    assert "acme" in list_llms()
    [record] = [r for r in list_plugins() if r.name == "broken"]
    assert record.status == "failed"
    assert record.package == "broken-pkg" and record.version == "1.0"
    assert "not_a_module_xyz" in (record.error or "")
    assert "broken-pkg" in caplog.text
    with pytest.raises(UnknownNameError) as caught:
        get_llm("brokenllm")
    assert "broken-pkg" in str(caught.value)  # the unknown-name error points at the broken plugin


UNBUILDABLE_PLUGIN = """
import taskloom
from pydantic import field_validator
from taskloom.testing import ScriptedLLM

class Unbuildable(ScriptedLLM):
    # Its validator names a field it does not have: pydantic refuses it when it builds the class.

    @field_validator("no_such_field")
    @classmethod
    def check(cls, value):
        return value

@taskloom.hookimpl
def register_llms(register):
    register("unbuildable", Unbuildable)
"""


def test_a_plugin_class_that_cannot_be_built_fails_its_plugin_named_with_its_package(site: Any) -> None:
    # Components build their validators on first use; a plugin's are built as it registers them,
    # so the failure is the plugin's, reported with its package, not a surprise at first use.
    site.install("shaky-pkg", {"shaky": "shaky_plugin"}, {"shaky_plugin": UNBUILDABLE_PLUGIN})
    site.install("acme-llm", {"acme": "acme_llm"}, {"acme_llm": llm_plugin("acme")})
    assert "acme" in list_llms() and "unbuildable" not in list_llms()
    [record] = [r for r in list_plugins() if r.name == "shaky"]
    assert record.status == "failed" and record.package == "shaky-pkg"
    assert "Decorators defined with incorrect fields" in (record.error or "")


def test_strict_mode_turns_a_broken_plugin_into_an_error(site: Any, monkeypatch) -> None:
    site.install("broken-pkg", {"broken": "broken_plugin"}, {"broken_plugin": "raise RuntimeError('boom')\n"})
    monkeypatch.setenv("TASKLOOM_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"broken-pkg 1\.0.*boom"):
        list_llms()


def test_two_packages_registering_one_name_is_an_error_naming_both(site: Any) -> None:
    site.install("pkg-one", {"one": "plugin_one"}, {"plugin_one": llm_plugin("same", "One")})
    two = (
        llm_plugin("same", "Two") + "\nclass Unique(taskloom.TextGeneration):\n    registry_name = 'unique-task'\n"
        "\n@taskloom.hookimpl\ndef register_tasks(register):\n    register(Unique)\n"
    )
    site.install("pkg-two", {"two": "plugin_two"}, {"plugin_two": two})
    assert "unique-task" in list_tasks()  # the rest of both packages still works
    with pytest.raises(PluginConflictError) as caught:
        get_llm("same")
    message = str(caught.value)
    assert "pkg-one 1.0" in message and "pkg-two 1.0" in message
    assert "TASKLOOM_DISABLE_PLUGINS=one" in message and "TASKLOOM_DISABLE_PLUGINS=two" in message


def test_a_plugin_may_not_take_a_builtin_name(site: Any) -> None:
    site.install("squatter", {"squat": "squat_plugin"}, {"squat_plugin": task_plugin("text-generation")})
    list_tasks()
    with pytest.raises(PluginConflictError, match="squatter"):
        get_task("text-generation", llm=ScriptedLLM())


def test_deny_list_and_allow_list(site: Any, monkeypatch) -> None:
    site.install("pkg-one", {"one": "plugin_one"}, {"plugin_one": llm_plugin("one")})
    site.install("pkg-two", {"two": "plugin_two"}, {"plugin_two": llm_plugin("two", "Two")})
    monkeypatch.setenv("TASKLOOM_DISABLE_PLUGINS", "two")
    assert "one" in list_llms() and "two" not in list_llms()
    assert {r.name: r.status for r in list_plugins()}["two"] == "disabled"
    assert "plugin_two" not in sys.modules

    taskloom.registry.set_registry(taskloom.registry.Registry())
    monkeypatch.delenv("TASKLOOM_DISABLE_PLUGINS")
    monkeypatch.setenv("TASKLOOM_PLUGINS", "two")
    assert "two" in list_llms() and "one" not in list_llms()
    assert "scripted" in list_llms()  # core's built-ins are not a plugin to filter


def test_misspelled_hook_is_a_load_error_naming_the_plugin(site: Any, monkeypatch) -> None:
    source = """
import taskloom
@taskloom.hookimpl
def register_llm(register):
    pass
"""
    site.install("typo-pkg", {"typo": "typo_plugin"}, {"typo_plugin": source})
    [record] = [r for r in list_plugins() if r.name == "typo"]
    assert record.status == "failed"
    assert "register_llm" in (record.error or "") and "typo-pkg" in (record.error or "")
    taskloom.registry.set_registry(taskloom.registry.Registry())
    monkeypatch.setenv("TASKLOOM_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="typo-pkg"):
        list_llms()


def test_plugin_requiring_another_core_version_is_refused(site: Any) -> None:
    site.install(
        "future-pkg", {"future": "future_plugin"}, {"future_plugin": llm_plugin("future")}, requires="taskloom>=9"
    )
    assert "future" not in list_llms()
    [record] = [r for r in list_plugins() if r.name == "future"]
    assert record.status == "failed"
    assert "requires taskloom>=9" in (record.error or "")
    assert "future_plugin" not in sys.modules  # refused before its code ran


def test_registering_something_that_is_not_a_task_is_refused(site: Any) -> None:
    source = """
import taskloom
@taskloom.hookimpl
def register_tasks(register):
    register("nope", dict)
"""
    site.install("wrong-pkg", {"wrong": "wrong_plugin"}, {"wrong_plugin": source})
    [record] = [r for r in list_plugins() if r.name == "wrong"]
    assert "not a subclass of taskloom.Task" in (record.error or "")


def test_unknown_name_lists_close_matches_and_installed_names() -> None:
    with pytest.raises(UnknownNameError) as caught:
        get_task("text-generaton")
    message = str(caught.value)
    assert "Did you mean: 'text-generation'" in message
    assert "chat-generation" in message
    assert isinstance(caught.value, LookupError)


def test_builtins_are_registered_through_the_same_hooks() -> None:
    [core] = [r for r in list_plugins() if r.name == "taskloom"]
    assert core.status == "loaded"
    assert "task:text-generation" in core.registered and "llm:scripted" in core.registered
    assert get_registry().pm.get_plugin("taskloom") is not None


def test_fixture_registers_a_plugin_for_one_test(taskloom_plugin) -> None:
    class Plugin:
        @taskloom.hookimpl
        def register_tasks(self, register) -> None:
            register(FixtureTask, aliases=["ft"])

    taskloom_plugin(Plugin(), name="fixture-plugin")
    assert type(get_task("ft", llm=ScriptedLLM())) is FixtureTask
    assert "fixture-task" in list_tasks()


class FixtureTask(taskloom.TextGeneration):
    registry_name = "fixture-task"


def test_fixture_plugin_is_gone_after_its_test() -> None:
    with pytest.raises(UnknownNameError):
        get_task("fixture-task", llm=ScriptedLLM())


def test_cli_lists_plugins_tasks_and_llms(site: Any, capsys) -> None:
    site.install("acme-llm", {"acme": "acme_llm"}, {"acme_llm": llm_plugin("acme", doc="Acme's model.")})
    site.install("broken-pkg", {"broken": "broken_plugin"}, {"broken_plugin": "import not_a_module_xyz\n"})
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "acme-llm" in out and "llm:acme" in out and "failed" in out and "not_a_module_xyz" in out
    assert main(["plugins", "--json"]) == 0
    records = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert records["acme"]["package"] == "acme-llm" and records["acme"]["registered"] == ["llm:acme"]
    assert records["broken"]["status"] == "failed"
    assert main(["llms"]) == 0
    assert "Acme's model." in capsys.readouterr().out
    assert main(["tasks", "--json"]) == 0
    tasks = {t["name"]: t for t in json.loads(capsys.readouterr().out)}
    assert tasks["text-generation"]["inputs"] == {"instruction": True, "system_prompt": False, "image": False}
    assert tasks["text-generation"]["outputs"] == {"generation": True, "model_name": True}
    assert main(["tasks"]) == 0
    assert "instruction, system_prompt?" in capsys.readouterr().out


def test_cli_shows_one_task_in_full(capsys) -> None:
    assert main(["tasks", "structured-generation"]) == 0
    out = capsys.readouterr().out
    assert "Generate a JSON object that follows a schema" in out
    assert "output_schema" in out and "(required)" in out  # its own parameter, with no default
    assert main(["tasks", "text-generation", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["example"]["input"] == {"instruction": "What's the capital city of Spain? Answer in one sentence."}
    assert {p["name"] for p in info["parameters"]} == {"system_prompt", "template", "columns"}
    assert main(["tasks", "text-generaton"]) != 0
    assert "Did you mean: 'text-generation'" in capsys.readouterr().err


def test_task_of_a_class_without_registry_name_is_named_as_asked(site: Any) -> None:
    source = """
import taskloom

class Unnamed(taskloom.TextGeneration):
    pass

@taskloom.hookimpl
def register_tasks(register):
    register("my-name", Unnamed)
"""
    site.install("unnamed-pkg", {"unnamed": "unnamed_plugin"}, {"unnamed_plugin": source})
    task = get_task("my-name", llm=ScriptedLLM())
    assert task.name == "my-name"
    assert task.dump()["type"] == "my-name"  # the registered name is the class's: written once
    assert taskloom.load_task(task.dump()) == task


def test_a_name_is_written_once(site: Any) -> None:
    """``register(Cls)`` takes the class's registry_name; another name for it is refused at registration."""
    source = """
import taskloom

class Named(taskloom.TextGeneration):
    registry_name = "named-task"

class Nameless(taskloom.TextGeneration):
    pass

@taskloom.hookimpl
def register_tasks(register):
    register("other-name", Named)
"""
    site.install("twice-pkg", {"twice": "twice_plugin"}, {"twice_plugin": source})
    with pytest.raises(
        UnknownNameError, match=r"twice-pkg 1\.0.*registers Named as 'other-name'.*registry_name = 'named-task'"
    ):
        get_task("other-name", llm=ScriptedLLM())
    from taskloom.registry import TaskRegister

    sink: list[Any] = []
    register = TaskRegister(sink, "p", "pkg", "1")
    with pytest.raises(PluginError, match="declare `registry_name"):
        register(type("Nameless", (taskloom.TextGeneration,), {"__module__": __name__}))
    register(FixtureTask)
    assert [r.name for r in sink] == ["fixture-task"]


def test_strict_conflict_leaves_nothing_of_the_plugin_behind(site: Any, monkeypatch: Any) -> None:
    source = """
import taskloom

class Fresh(taskloom.TextGeneration):
    registry_name = "fresh-name"

@taskloom.hookimpl
def register_tasks(register):
    register(Fresh)
    register("text-generation", taskloom.TextGeneration)
"""
    site.install("clash-pkg", {"clash": "clash_plugin"}, {"clash_plugin": source})
    monkeypatch.setenv("TASKLOOM_STRICT_PLUGINS", "1")
    with pytest.raises(PluginConflictError, match="clash-pkg"):
        list_tasks()
    assert "fresh-name" not in get_registry().names("task")


def test_unknown_name_mentions_disabled_plugins(site: Any, monkeypatch: Any) -> None:
    site.install("acme-llm", {"acme": "acme_llm"}, {"acme_llm": llm_plugin("acme")})
    monkeypatch.setenv("TASKLOOM_DISABLE_PLUGINS", "acme")
    with pytest.raises(UnknownNameError, match=r"acme-llm 1\.0 .* is disabled"):
        get_llm("acme")


@pytest.mark.parametrize(
    "spec",
    [
        "taskloom>=0.1,<1",
        "taskloom >= 0.1 , < 1",
        "Task_Loom>=9",
        "taskloom==0.1",
        "taskloom==0.1.0.0",
        "taskloom!=0.1.0",
        "taskloom>0.1",
        "taskloom<=0.1",
        "taskloom<0.1.1",
        "taskloom(>=0.1)",
        "taskloom",
        "taskloom~=0.1",
        "taskloom==0.*",
        "taskloom>=0.1rc1",
        "taskloom[yaml]>=2",
        'taskloom>=2; extra == "x"',
        'taskloom>=2; python_version >= "3"',
        "taskloom-extras>=5",
        "pydantic>=99",
    ],
)
def test_core_requirement_check_agrees_with_packaging(spec: str, monkeypatch) -> None:
    """The hand-read fast path answers exactly what packaging's full PEP 440/508 reading does."""
    from types import SimpleNamespace

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from taskloom import plugins

    requirement = Requirement(spec)
    applies = canonicalize_name(requirement.name) == "taskloom" and (
        requirement.marker is None or requirement.marker.evaluate({"extra": ""})
    )
    expected_ok = not applies or requirement.specifier.contains(plugins.__version__, prereleases=True)
    ep = SimpleNamespace(name="probe", dist=SimpleNamespace(requires=[spec], metadata={"Name": "p"}, version="1"))
    if expected_ok:
        plugins.check_core_requirement(ep)  # type: ignore[arg-type]
    else:
        with pytest.raises(PluginError, match="requires taskloom"):
            plugins.check_core_requirement(ep)  # type: ignore[arg-type]


OLD_STYLE_PROVIDER = '''
import taskloom
from taskloom import LLM


class OldLLM(LLM):
    registry_name = "old-style"
    model_name: str = "old"

    def generate(self, inputs, num_generations=1, temperature=1.0):
        """Answer.

        Args:
            temperature: sampling temperature.
        """
        return []


@taskloom.hookimpl
def register_llms(register):
    register(OldLLM)
'''


def test_a_provider_on_the_old_contract_is_reported_with_what_to_change(site: Any) -> None:
    """Options as keyword parameters of generate(): refused when the plugin loads, not deep in a run."""
    site.install("old-provider", {"old-style": "old_provider"}, {"old_provider": OLD_STYLE_PROVIDER})
    with pytest.raises(UnknownNameError) as caught:
        get_llm("old-style")
    message = str(caught.value)
    assert "old-provider 1.0" in message and "complete(self, inputs, num_generations, options)" in message
    assert "class Options(GenerationOptions)" in message
    [record] = [r for r in list_plugins() if r.package == "old-provider"]
    assert record.status == "failed" and "writing-an-llm-plugin" in (record.error or "")
    assert get_llm("scripted").model_name == "scripted", "the other plugins still work"
